"""Thin entry points: each reads its config, calls the library and writes its outputs atomically.

STAGES is the one list of them: the CLI builds its subcommands from it, the chain (`make all`,
pipeline.chain) runs those with `chain` in their order, `make help` prints it (`whale stages`) and
benchmarks read the order from it. A stage is a module with
`add_arguments(parser)` and `run(args)`; this file imports none of them (each pulls in torch), so a
command imports only the one it runs. A new stage is its module and one STAGES.register line here.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.registry import Registry

STAGES = Registry("stage")

# The chain's values a chain stage may take on its command line (pipeline.chain builds them):
# data (--data), model (--model), folds_file (--folds-file), budget (--budget), out (--out).
CHAIN_ARGS = ("data", "model", "folds_file", "budget", "out")


@dataclass(frozen=True)
class Stage:
    name: str
    order: int  # where `whale --help` lists it and, for a chain stage, where the chain runs it
    module: str  # dotted path of the module with add_arguments(parser) and run(args)
    help: str
    chain: tuple[str, ...] | None = None  # a chain stage: the CHAIN_ARGS it takes; None: not in the chain

    def load(self):
        import importlib

        return importlib.import_module(self.module)


def stage(name: str, order: int, help: str, chain: tuple[str, ...] | None = None,
          module: str | None = None) -> Stage:
    """Registers a stage (its module pipeline.stages.<name> unless `module` names another)."""
    unknown = set(chain or ()) - set(CHAIN_ARGS)
    if unknown:
        raise ValueError(f"stage {name!r}: unknown chain argument {sorted(unknown)[0]!r}; use {', '.join(CHAIN_ARGS)}")
    entry = Stage(name, order, module or f"pipeline.stages.{name}", help, None if chain is None else tuple(chain))
    return STAGES.register(name)(entry)


def ordered() -> list[Stage]:
    """Every stage, in order (name breaks a tie)."""
    return sorted((STAGES.get(n) for n in STAGES), key=lambda s: (s.order, s.name))


def chain_stages() -> list[Stage]:
    """The stages `make all` and pipeline.chain run, in order."""
    return [s for s in ordered() if s.chain is not None]


stage("synth", 10, "write the built-in synthetic data set")
stage("boxes", 20, "learn a fluke detector from boxed photos (whale boxes train)")
stage("preprocess", 30, "validate the Kaggle layout and cache resized photos", chain=("data",))
stage("folds", 40, "cross-validation folds shaped like test", chain=("folds_file",))
stage("train", 50, "train a model config on each fold", chain=("model", "folds_file", "budget"))
stage("embed", 60, "embeddings of train and test photos per fold model", chain=("model", "folds_file"))
stage("knn", 70, "nearest whales per photo and the new_whale threshold", chain=("model", "folds_file"))
stage("ensemble", 80, "fuse several models' predictions", chain=("model", "folds_file"))
stage("submit", 90, "write the submission CSV", chain=("folds_file", "out"))
stage("cv", 100, "MAP@5 per fold and overall", chain=("folds_file",))
stage("score", 110, "MAP@5 of a submission against a solution.csv")
stage("bundle", 120, "export a work folder's models, galleries and policy for identification")
stage("identify", 130, "top five known whales for new photos")
stage("report", 140, "a self-contained HTML report of the run")
stage("serve", 150, "a local web page to identify uploaded photos")
stage("catalogue", 160, "keep a catalogue of known individuals: add photos, review, decide, export")
