"""Run the whole chain of stages in one process: what `make all` does, for tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError


def run_chain(data, work, model: str, configs="configs", overrides=(), folds_file=None, submission=None,
              budget: float | None = None) -> Path:
    """preprocess .. cv for one model; returns the submission path. Raises if a stage fails."""
    from pipeline.cli import main

    work = Path(work)
    folds_file = str(folds_file or work / "folds.csv")
    submission = str(submission or work / "sub.csv")
    common = ["--work", str(work), "--configs", str(configs), *(x for o in overrides for x in ("--set", o))]
    model_args = [*common, "--model", model, "--folds-file", folds_file]
    for argv in (["preprocess", "--data", str(data), *common],
                 ["folds", *common, "--folds-file", folds_file],
                 ["train", *model_args, *(["--budget", str(budget)] if budget else [])],
                 ["embed", *model_args],
                 ["knn", *model_args],
                 ["ensemble", *model_args],
                 ["submit", *common, "--folds-file", folds_file, "--out", submission],
                 ["cv", *common, "--folds-file", folds_file]):
        if main(argv) != 0:
            raise PipelineError(f"stage {argv[0]} failed (see the error above)", data)
    return Path(submission)
