"""The submission format: Image,Id with exactly five distinct space-separated labels per test photo."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError


def check_submission(df: pd.DataFrame, test_images, where: str | Path = "submission") -> None:
    if list(df.columns) != [C.IMAGE, C.ID]:
        raise PipelineError(f"header is {','.join(map(str, df.columns))!r}, expected 'Image,Id'", where, 1)
    expected = list(test_images)
    if len(df) != len(expected):
        raise PipelineError(f"{len(df)} rows but sample_submission.csv lists {len(expected)} test photos", where)
    wanted = set(expected)
    seen: set[str] = set()
    for i, (image, labels) in enumerate(zip(df[C.IMAGE], df[C.ID])):
        row = i + 2
        if image not in wanted:
            raise PipelineError(f"{image!r} is not a test photo", where, row)
        if image in seen:
            raise PipelineError(f"{image!r} appears twice", where, row)
        seen.add(image)
        parts = str(labels).split(" ")
        if len(parts) != C.SUBMISSION_LABELS or any(p == "" for p in parts):
            raise PipelineError(f"expected {C.SUBMISSION_LABELS} space-separated labels, got {labels!r}", where, row)
        if len(set(parts)) != len(parts):
            raise PipelineError(f"labels repeat in {labels!r}", where, row)


def read_submission(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PipelineError("file not found", path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def score_submission(submission: pd.DataFrame, solution: pd.DataFrame, where="submission") -> float:
    from pipeline.metrics import map_at_5

    check_submission(submission, solution[C.IMAGE], where)
    truth = solution.set_index(C.IMAGE)[C.ID]
    return map_at_5(truth.loc[submission[C.IMAGE]].tolist(), [s.split(" ") for s in submission[C.ID]])
