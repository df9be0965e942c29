"""Run the whole chain of stages in one process: what `make all` does, for tests and benchmarks. The
stages and their order come from the stage registry (pipeline/stages/__init__.py)."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io.paths import own_folds_file, own_submission


def chain_argv(data, work, model: str, configs="configs", overrides=(), folds_file=None, submission=None,
               budget: float | None = None, start: str | None = None, stop: str | None = None) -> list[list[str]]:
    """Each chain stage's command line, in order (from stage `start` on, up to stage `stop`, when given):
    the common arguments and the chain values the stage declares (data, model, folds_file, budget, out)."""
    from pipeline.cli import STAGES, chain_stages  # the stage registry, through the CLI (the door to the stages)

    work = Path(work)
    folds_file = str(folds_file or own_folds_file(work))
    submission = str(submission or own_submission(work))
    common = ["--work", str(work), "--configs", str(configs), *(x for o in overrides for x in ("--set", o))]
    values = {"data": ["--data", str(data)], "model": ["--model", model], "folds_file": ["--folds-file", folds_file],
              "budget": ["--budget", str(budget)] if budget else [], "out": ["--out", submission]}
    stages = chain_stages()
    if start is not None:
        first = STAGES.get(start)
        stages = [s for s in stages if (s.order, s.name) >= (first.order, first.name)]
    if stop is not None:
        last = STAGES.get(stop)
        stages = [s for s in stages if (s.order, s.name) <= (last.order, last.name)]
    return [[s.name, *common, *(x for key in s.chain for x in values[key])] for s in stages]


def run_chain(data, work, model: str, configs="configs", overrides=(), folds_file=None, submission=None,
              budget: float | None = None) -> Path:
    """preprocess .. cv for one model; returns the submission path. Raises if a stage fails."""
    from pipeline.cli import main

    work = Path(work)
    for argv in chain_argv(data, work, model, configs, overrides, folds_file, submission, budget):
        if main(argv) != 0:
            raise PipelineError(f"stage {argv[0]} failed (see the error above)", data)
    return Path(submission or own_submission(work))
