"""MAP@5 as Kaggle scored the humpback competition.

Each image has one true label; a prediction is a list of labels; the score of one image is 1/rank of
the first occurrence of the true label among the first five (0 if absent). Later repeats of a label
are ignored: ["a", "a", "b"] with truth "b" scores 1/3, because rank counts positions.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def average_precision_at_5(truth: str, predicted: Sequence[str]) -> float:
    for rank, label in enumerate(predicted[:5], start=1):
        if label == truth:
            return 1.0 / rank
    return 0.0


def map_at_5(truths: Iterable[str], predictions: Iterable[Sequence[str]]) -> float:
    truths = list(truths)
    predictions = list(predictions)
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions")
    if not truths:
        raise ValueError("MAP@5 of an empty set is undefined")
    return float(np.mean([average_precision_at_5(t, p) for t, p in zip(truths, predictions)]))
