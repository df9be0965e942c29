"""One score per known whale per query: the best similarity over that whale's gallery photos."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C


def rank_whales(similarities: np.ndarray, neighbours: np.ndarray, gallery_codes: np.ndarray,
                keep_top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best `keep_top` whales as (codes, scores), queries x keep_top, best first; code -1
    and score -inf pad rows with fewer whales.

    faiss returns neighbours best first, so a whale's first appearance in a row is its best photo. A
    stable sort of each row's whale codes finds the first appearances in one pass over the whole
    matrix: no Python loop over queries, no table of query-whale pairs."""
    nq, k = neighbours.shape
    codes = np.where(neighbours >= 0, np.asarray(gallery_codes)[np.maximum(neighbours, 0)], -1)
    order = np.argsort(codes, axis=1, kind="stable")
    sorted_codes = np.take_along_axis(codes, order, axis=1)
    first_sorted = np.ones_like(sorted_codes, dtype=bool)
    first_sorted[:, 1:] = sorted_codes[:, 1:] != sorted_codes[:, :-1]
    first = np.zeros_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    first &= codes >= 0
    rank = np.cumsum(first, axis=1) - 1
    keep = first & (rank < keep_top)
    out_codes = np.full((nq, keep_top), -1, dtype=np.int64)
    out_scores = np.full((nq, keep_top), -np.inf, dtype=np.float32)
    q, j = np.nonzero(keep)
    out_codes[q, rank[q, j]] = codes[q, j]
    out_scores[q, rank[q, j]] = similarities[q, j]
    return out_codes, out_scores


def fuse_models(per_model: list[tuple[list[pd.DataFrame], list[set]]], weights: list[float]) -> pd.DataFrame:
    """Scores of several models' fold models: per model, a whale's mean over the fold models whose gallery
    holds it (a model whose gallery lacks the whale abstains instead of voting a floor); then the
    models' weighted mean, as the ensemble's fusion fused them. knn, identify and the catalogue's
    evaluation all fuse through here."""
    return fuse([fuse(tables, known=known) for tables, known in per_model], weights)


def fuse(tables: list[pd.DataFrame], weights: list[float] | None = None, known: list[set] | None = None) -> pd.DataFrame:
    """Weighted mean of several score tables over (Image, Id).

    A whale that one table did not keep for a query gets that table's lowest kept score for the query:
    an upper bound on what it would have scored, so fusing never rewards being left out. With `known`
    (the whales each table's gallery holds), a table whose gallery lacks the whale abstains instead."""
    weights = weights or [1.0] * len(tables)
    if len(tables) == 1:
        return tables[0].sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).reset_index(drop=True)
    keys = pd.concat([t[[C.IMAGE, C.ID]] for t in tables]).drop_duplicates().reset_index(drop=True)
    total = np.zeros(len(keys), dtype=np.float64)
    weight_sum = np.zeros(len(keys), dtype=np.float64)
    for i, (table, weight) in enumerate(zip(tables, weights)):
        floor = table.groupby(C.IMAGE)[C.SCORE].min()
        merged = keys.merge(table, on=[C.IMAGE, C.ID], how="left")
        filled = merged[C.SCORE].fillna(merged[C.IMAGE].map(floor)).fillna(0.0).to_numpy(np.float64)
        # Membership one row at a time: the table is small, the gallery's set of whales may be huge
        # (pandas' isin would copy the whole set for every table).
        votes = np.ones(len(keys)) if known is None else \
            (merged[C.SCORE].notna().to_numpy() | np.fromiter((w in known[i] for w in merged[C.ID]), bool,
                                                              count=len(merged))).astype(np.float64)
        total += weight * votes * filled
        weight_sum += weight * votes
    fused = keys.assign(**{C.SCORE: (total / np.maximum(weight_sum, 1e-12)).astype(np.float32)})
    return fused.sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).reset_index(drop=True)
