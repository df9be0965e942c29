"""Cross-validation folds shaped like the test set.

Every train photo gets a fold (its validation fold) or TRAIN_ONLY. Whales come in three kinds:
- split whales (2+ photos): photos spread round-robin over folds, so each validation photo has
  another photo of the same whale in that fold's training part; truth = the whale;
- held-out whales: a share of the multi-photo whales, and every singleton, put wholly in one fold, so
  validation holds whales its training never saw, as test does; truth = new_whale;
- new_whale photos: as many go to validation as bring each fold's new_whale share to the target;
  the rest are TRAIN_ONLY.
Near-duplicate photos of one whale (preprocess's duplicates.csv) move as one unit: a validation photo
never finds its own copy in training, which would flatter CV. A whale whose photos are all copies of
one shot counts as a singleton.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError


def duplicate_units(train: pd.DataFrame, pairs: pd.DataFrame | None) -> np.ndarray:
    """A unit number per train photo: photos of one whale joined by near-duplicate pairs share one."""
    parent = list(range(len(train)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if pairs is not None and len(pairs):
        position = pd.Series(np.arange(len(train)), index=train[C.IMAGE].to_numpy())
        ids = train[C.ID].to_numpy()
        same = pairs[(pairs["split_a"] == C.TRAIN) & (pairs["split_b"] == C.TRAIN)]
        for a, b in zip(same["image_a"], same["image_b"]):
            if a in position.index and b in position.index:
                i, j = int(position[a]), int(position[b])
                if ids[i] == ids[j] and ids[i] != C.NEW_WHALE:
                    parent[root(i)] = root(j)
    return np.array([root(i) for i in range(len(train))])


def make_folds(train: pd.DataFrame, n_folds: int = 5, new_whale_share: float = 0.28,
               holdout_whale_share: float = 0.1, seed: int = 0, duplicates: pd.DataFrame | None = None) -> pd.DataFrame:
    if n_folds < 2:
        raise PipelineError(f"folds.n_folds is {n_folds}; cross-validation needs at least 2", "folds config")
    if not 0 <= new_whale_share < 1:
        raise PipelineError(f"folds.new_whale_share is {new_whale_share}; it must be in [0, 1)", "folds config")
    rng = np.random.default_rng(seed)
    ids = train[C.ID].to_numpy()
    known = ids != C.NEW_WHALE
    if not known.any():
        raise PipelineError("train.csv holds only new_whale photos: there is no known whale to learn", "train.csv")

    fold = np.full(len(train), C.TRAIN_ONLY, dtype=np.int64)
    sizes = np.zeros(n_folds, dtype=np.int64)  # validation photos per fold
    unmatched = np.zeros(n_folds, dtype=np.int64)  # of which the truth is new_whale

    groups = pd.Series(np.arange(len(train))[known]).groupby(ids[known]).apply(list)
    unit_of = duplicate_units(train, duplicates)
    # Each whale's photos as units: lists of photos that must share a fold.
    units = {w: list(pd.Series(photos).groupby(unit_of[photos]).apply(list)) for w, photos in groups.items()}
    whales = list(groups.index)
    rng.shuffle(whales)
    multi = [w for w in whales if len(units[w]) >= 2]
    n_holdout = int(round(holdout_whale_share * len(multi)))
    holdout = set(multi[:n_holdout]) | {w for w in whales if len(units[w]) == 1}

    def emptiest() -> np.ndarray:  # folds from fewest validation photos up, ties broken at random
        return np.lexsort((rng.random(n_folds), sizes))

    # Larger groups first, so the small ones even out the fold sizes.
    for whale in sorted(holdout, key=lambda w: (-len(groups[w]), whales.index(w))):
        k = emptiest()[0]
        fold[groups[whale]] = k
        sizes[k] += len(groups[whale])
        unmatched[k] += len(groups[whale])
    for whale in sorted(set(whales) - holdout, key=lambda w: (-len(groups[w]), whales.index(w))):
        shuffled = rng.permutation(len(units[whale]))  # drawn before `emptiest`, as when photos were the units
        order = emptiest()
        for i, u in enumerate(shuffled):
            k = order[i % n_folds]
            fold[units[whale][u]] = k
            sizes[k] += len(units[whale][u])

    # new_whale photos: enough per fold to reach the wanted share (shared out in proportion when there
    # are too few), the rest train-only.
    new_photos = rng.permutation(np.flatnonzero(~known))
    want = np.maximum(0, np.ceil((new_whale_share * sizes - unmatched) / (1 - new_whale_share))).astype(np.int64)
    if want.sum() > len(new_photos):
        want = np.floor(want * len(new_photos) / want.sum()).astype(np.int64)
    start = 0
    for k in range(n_folds):
        fold[new_photos[start:start + want[k]]] = k
        start += want[k]

    out = pd.DataFrame({C.IMAGE: train[C.IMAGE].to_numpy(), C.ID: ids, C.FOLD: fold})
    out[C.TRUTH] = validation_truth(out)
    return out


def validation_truth(folds: pd.DataFrame) -> np.ndarray:
    """The label a photo should get when it is a query in its own fold: its whale if that whale has a
    photo in the fold's training part, else new_whale."""
    ids, fold = folds[C.ID].to_numpy(), folds[C.FOLD].to_numpy()
    truth = np.full(len(folds), C.NEW_WHALE, dtype=object)
    folds_of = pd.Series(fold).groupby(ids).apply(lambda s: set(s.tolist()))
    for i, (whale, k) in enumerate(zip(ids, fold)):
        if whale != C.NEW_WHALE and k != C.TRAIN_ONLY and folds_of[whale] - {k}:
            truth[i] = whale
    return truth


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    val = folds[folds[C.FOLD] != C.TRAIN_ONLY]
    rows = []
    for k, part in val.groupby(C.FOLD):
        train_part = folds[folds[C.FOLD] != k]
        rows.append({
            "fold": int(k), "validation": len(part),
            "new_whale_share": round(float((part[C.TRUTH] == C.NEW_WHALE).mean()), 3),
            "known_queries": int((part[C.TRUTH] != C.NEW_WHALE).sum()),
            "train_photos": len(train_part),
            "train_whales": int(train_part.loc[train_part[C.ID] != C.NEW_WHALE, C.ID].nunique()),
        })
    return pd.DataFrame(rows)


def check_folds(folds: pd.DataFrame, train_images, path) -> None:
    """The folds file must cover exactly the cached train photos (a stale file from other data fails)."""
    for column in (C.IMAGE, C.ID, C.FOLD, C.TRUTH):
        if column not in folds.columns:
            raise PipelineError(f"missing column {column!r}; re-run the folds stage", path, 1)
    have, want = set(folds[C.IMAGE]), set(train_images)
    if have != want:
        extra, missing = sorted(have - want), sorted(want - have)
        example = f"{extra[0]!r} is not a cached train photo" if extra else f"{missing[0]!r} has no fold"
        raise PipelineError(f"folds do not match the cached train photos ({example}); re-run the folds "
                            "stage for this data", path)
    # A whale whose photos are all in one fold can only be new_whale there (nothing to match in training).
    expected = validation_truth(folds)
    wrong = np.flatnonzero((folds[C.FOLD].to_numpy() != C.TRAIN_ONLY) & (folds[C.TRUTH].to_numpy() != expected))
    if len(wrong):
        i = int(wrong[0])
        raise PipelineError(f"truth {folds[C.TRUTH].iat[i]!r} for {folds[C.IMAGE].iat[i]!r} in fold "
                            f"{folds[C.FOLD].iat[i]} should be {expected[i]!r} (whale {folds[C.ID].iat[i]!r} has "
                            f"{'no' if expected[i] == C.NEW_WHALE else 'a'} photo outside that fold)", path, i + 2)


def read_folds(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PipelineError("folds file not found; run the folds stage first", path)
    return pd.read_csv(path, dtype={C.IMAGE: str, C.ID: str, C.TRUTH: str}, keep_default_na=False)
