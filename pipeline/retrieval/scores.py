"""One score per known whale per query: the best similarity over that whale's gallery photos."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C


def whale_scores(similarities: np.ndarray, neighbours: np.ndarray, gallery_ids: np.ndarray,
                 query_names, keep_top: int) -> pd.DataFrame:
    """Long table Image, Id, score: each query's best `keep_top` whales, best first.

    faiss returns neighbours best first, so the first time a whale appears is its best photo;
    keeping the first (query, whale) pair does the grouping without a Python loop."""
    nq, k = neighbours.shape
    query = np.repeat(np.arange(nq), k)
    flat_idx = neighbours.reshape(-1)
    valid = flat_idx >= 0  # faiss pads with -1 when the gallery is smaller than k
    ids = pd.Categorical(gallery_ids)
    frame = pd.DataFrame({"q": query[valid], "w": ids.codes[flat_idx[valid]],
                          C.SCORE: similarities.reshape(-1)[valid]})
    frame = frame.drop_duplicates(["q", "w"], keep="first")
    frame["rank"] = frame.groupby("q").cumcount()
    frame = frame[frame["rank"] < keep_top]
    names = np.asarray(query_names)
    return pd.DataFrame({C.IMAGE: names[frame["q"].to_numpy()],
                         C.ID: np.asarray(ids.categories)[frame["w"].to_numpy()],
                         C.SCORE: frame[C.SCORE].to_numpy(np.float32)})


def fuse(tables: list[pd.DataFrame], weights: list[float] | None = None) -> pd.DataFrame:
    """Weighted mean of several score tables over (Image, Id).

    A whale that one table did not keep for a query gets that table's lowest kept score for the query:
    an upper bound on what it would have scored, so fusing never rewards being left out."""
    weights = weights or [1.0] * len(tables)
    if len(tables) == 1:
        return tables[0].sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).reset_index(drop=True)
    keys = pd.concat([t[[C.IMAGE, C.ID]] for t in tables]).drop_duplicates()
    total = np.zeros(len(keys), dtype=np.float64)
    for table, weight in zip(tables, weights):
        floor = table.groupby(C.IMAGE)[C.SCORE].min()
        merged = keys.merge(table, on=[C.IMAGE, C.ID], how="left")
        filled = merged[C.SCORE].fillna(merged[C.IMAGE].map(floor)).fillna(0.0)
        total += weight * filled.to_numpy(np.float64)
    fused = keys.assign(**{C.SCORE: (total / sum(weights)).astype(np.float32)})
    return fused.sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).reset_index(drop=True)
