"""Duplicate photos: within train, and between train and test, found by perceptual hash.

Kaggle's humpback set held hundreds of (near-)identical photos. Within train they reveal one whale
under two ids (an option merges such ids); between train and test they give away a test photo's
whale (using that in a submission is an explicit opt-in, reported when used).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.data.phash import close_pairs

PAIR_COLUMNS = ["image_a", "split_a", "id_a", "image_b", "split_b", "id_b", "distance"]


def find_duplicates(manifest: pd.DataFrame, hashes: np.ndarray, max_distance: int) -> pd.DataFrame:
    """Pairs of photos whose hashes differ in at most max_distance bits (test/test pairs left out:
    they tell nothing about any whale). Train photos come first in a train/test pair."""
    i, j, d = close_pairs(hashes, max_distance)
    split = manifest[C.SPLIT].to_numpy()
    swap = (split[i] == C.TEST) & (split[j] == C.TRAIN)
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    keep = ~((split[i] == C.TEST) & (split[j] == C.TEST))
    i, j, d = i[keep], j[keep], d[keep]
    names, ids = manifest[C.IMAGE].to_numpy(), manifest[C.ID].to_numpy()
    return pd.DataFrame({"image_a": names[i], "split_a": split[i], "id_a": ids[i], "image_b": names[j],
                         "split_b": split[j], "id_b": ids[j], "distance": d}, columns=PAIR_COLUMNS)


def merged_ids(pairs: pd.DataFrame) -> dict[str, str]:
    """Whale ids that share a duplicate train photo, united (union-find); each maps to the
    alphabetically first id of its group. new_whale never merges (it is not one whale)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    train = pairs[(pairs["split_a"] == C.TRAIN) & (pairs["split_b"] == C.TRAIN)]
    for a, b in zip(train["id_a"], train["id_b"]):
        if a == b or C.NEW_WHALE in (a, b):
            continue
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: root(x) for x in parent}


def duplicate_answers(pairs: pd.DataFrame) -> pd.DataFrame:
    """For test photos with a (near-)duplicate known-whale train photo: Image, Id of the closest one."""
    cross = pairs[(pairs["split_a"] == C.TRAIN) & (pairs["split_b"] == C.TEST) & (pairs["id_a"] != C.NEW_WHALE)]
    best = cross.sort_values(["image_b", "distance", "id_a"]).drop_duplicates("image_b")
    return pd.DataFrame({C.IMAGE: best["image_b"].to_numpy(), C.ID: best["id_a"].to_numpy()})


def put_first(labels: list[list[str]], names, answers: pd.DataFrame) -> tuple[list[list[str]], int]:
    """Each named test photo with an answer gets that whale first (its other labels shift down)."""
    lookup = dict(zip(answers[C.IMAGE], answers[C.ID]))
    out, used = [], 0
    for name, ranked in zip(names, labels):
        whale = lookup.get(name)
        if whale is None:
            out.append(ranked)
            continue
        used += 1
        out.append([whale, *[x for x in ranked if x != whale]][:C.SUBMISSION_LABELS])
    return out, used
