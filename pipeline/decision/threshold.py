"""Insert new_whale into each query's ranking at a score threshold, and tune that threshold for MAP@5.

new_whale goes just before the first whale whose score is below the threshold; if all five best
whales score above it, new_whale is not predicted. MAP@5 for a whole grid of thresholds is computed
at once from each query's five best scores and the rank of its true whale.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C

N = C.SUBMISSION_LABELS


def top_whales(scores: pd.DataFrame, names) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores), each len(names) x 5, best first; missing places hold '' and -inf."""
    names = list(names)
    ids = np.full((len(names), N), "", dtype=object)
    vals = np.full((len(names), N), -np.inf, dtype=np.float64)
    ranked = scores.sort_values([C.IMAGE, C.SCORE], ascending=[True, False])
    ranked = ranked.assign(rank=ranked.groupby(C.IMAGE).cumcount())
    ranked = ranked[ranked["rank"] < N]
    position = pd.Series(np.arange(len(names)), index=names)
    ranked = ranked[ranked[C.IMAGE].isin(position.index)]
    q = position.loc[ranked[C.IMAGE]].to_numpy()
    r = ranked["rank"].to_numpy()
    ids[q, r] = ranked[C.ID].to_numpy()
    vals[q, r] = ranked[C.SCORE].to_numpy()
    return ids, vals


def map5_by_threshold(ids: np.ndarray, vals: np.ndarray, truths, thresholds) -> np.ndarray:
    """MAP@5 at each threshold."""
    return precisions_by_threshold(ids, vals, truths, thresholds).mean(axis=0)


def precisions_by_threshold(ids: np.ndarray, vals: np.ndarray, truths, thresholds) -> np.ndarray:
    """Each query's average precision at 5 at each threshold (queries x thresholds)."""
    truths = np.asarray(list(truths), dtype=object)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    hit = ids == truths[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)  # 1..5 among whales, 0 if absent
    is_new = truths == C.NEW_WHALE
    # m[q, t]: whales ranked above new_whale at threshold t (scores are sorted, best first).
    m = (vals[:, :, None] >= thresholds[None, None, :]).sum(axis=1)
    r = rank[:, None]
    known_ap = np.where(r == 0, 0.0, np.where(r <= m, 1.0 / np.maximum(r, 1),
                                              np.where(r + 1 <= N, 1.0 / (r + 1), 0.0)))
    new_ap = np.where(m < N, 1.0 / (m + 1), 0.0)
    return np.where(is_new[:, None], new_ap, known_ap)


def threshold_grid(vals: np.ndarray, size: int) -> np.ndarray:
    finite = vals[np.isfinite(vals)]
    if finite.size == 0:
        return np.array([0.0])
    lo, hi = float(finite.min()), float(finite.max())
    return np.linspace(lo - 1e-6, hi + 1e-6, int(size))


def tune_threshold(ids: np.ndarray, vals: np.ndarray, truths, size: int = 201) -> tuple[float, float, pd.DataFrame]:
    """(best threshold, its MAP@5, the whole curve). The best is the middle of the best plateau,
    which generalises better than its edge."""
    grid = threshold_grid(vals, size)
    curve = map5_by_threshold(ids, vals, truths, grid)
    best = np.flatnonzero(curve >= curve.max() - 1e-12)
    choice = int(best[len(best) // 2])
    return float(grid[choice]), float(curve[choice]), pd.DataFrame({"threshold": grid, "map5": curve})


def share_threshold(vals: np.ndarray, share: float) -> float:
    """The threshold that puts new_whale first for `share` of the queries (their best whale scores
    lowest): no labels needed, so it can be set on test itself."""
    top = vals[:, 0][np.isfinite(vals[:, 0])]
    if top.size == 0:
        return 0.0
    return float(np.quantile(top, float(share)))


def predict(ids: np.ndarray, vals: np.ndarray, threshold: float, fallback: list[str]) -> list[list[str]]:
    """Five distinct labels per query: whales with new_whale inserted at the threshold, padded with
    `fallback` whales (e.g. the most photographed ones) when a query has fewer than five candidates."""
    out = []
    for row_ids, row_vals in zip(ids, vals):
        labels: list[str] = []
        for whale, score in zip(row_ids, row_vals):
            if whale == "":
                break
            if C.NEW_WHALE not in labels and score < threshold:
                labels.append(C.NEW_WHALE)
            labels.append(whale)
        if C.NEW_WHALE not in labels and len(labels) < N:
            labels.append(C.NEW_WHALE)
        for whale in fallback:
            if len(labels) >= N:
                break
            if whale not in labels:
                labels.append(whale)
        out.append(labels[:N])
    return out
