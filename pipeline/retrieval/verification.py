"""A siamese verification head: identification as verification ("same individual or not?"), the
pairwise re-ranker of the 4th-place 2019 humpback solution and of OML.

The head takes two embeddings a, b and outputs the probability that they show the same whale, from
the symmetric pair features [|a - b|, a * b] through a small MLP. It is trained as a classifier on
pairs mined from the gallery it will search, i.e. fold k's training photos:
  positives        pairs of photos of the same whale (up to `verify_positives` per photo);
  hard negatives   each photo's nearest gallery photos of other whales (`verify_negatives` per photo);
  new_whale        train's new_whale photos outside the fold against their nearest known photos.
Then it re-scores each query's `verify_top` whales: a whale's score becomes the highest probability
over its best-matching gallery photos. The scores are probabilities, so the new_whale policy is
fitted on (and calibrated to) them like on any other score.

Switched on by `knn.verify: true`; the retriever (retrieval/retriever.py) calls it, so knn, identify
and the web page all use it alike.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.retrieval.index import search


class VerificationHead(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @staticmethod
    def pair_features(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([(a - b).abs(), a * b], dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logit of 'same whale' for each row pair."""
        return self.mlp(self.pair_features(a, b)).squeeze(1)

    @torch.no_grad()
    def probability(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.eval()
        return torch.sigmoid(self(torch.from_numpy(a), torch.from_numpy(b))).numpy()


def mine_pairs(vectors: np.ndarray, ids: np.ndarray, negatives: np.ndarray | None, cfg: dict, options: dict,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows a, rows b, labels) into np.vstack([vectors, negatives])."""
    n = len(vectors)
    a, b, y = [], [], []
    by_whale = pd.Series(np.arange(n)).groupby(ids).apply(np.asarray)
    for members in by_whale:
        if len(members) < 2:
            continue
        for i in members:
            others = members[members != i]
            for j in rng.choice(others, size=min(len(others), int(cfg["verify_positives"])), replace=False):
                a.append(i), b.append(j), y.append(1.0)
    k = min(n, int(cfg["verify_negatives"]) + int(cfg["verify_positives"]) + 1)
    _, near = search(vectors, vectors, k, **options)
    for i in range(n):
        hard = [j for j in near[i] if j >= 0 and ids[j] != ids[i]][: int(cfg["verify_negatives"])]
        a += [i] * len(hard)
        b += hard
        y += [0.0] * len(hard)
    if negatives is not None and len(negatives):
        _, near = search(vectors, negatives, min(n, int(cfg["verify_negatives"])), **options)
        for r, row in enumerate(near):
            for j in row[row >= 0]:
                a.append(n + r), b.append(int(j)), y.append(0.0)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.array(y, dtype=np.float32)


def fit_head(vectors: np.ndarray, ids: np.ndarray, negatives: np.ndarray | None, cfg: dict, options: dict,
             seed: int = 0) -> VerificationHead:
    rng = np.random.default_rng(seed)
    a, b, y = mine_pairs(vectors, ids, negatives, cfg, options, rng)
    if y.sum() == 0 or y.sum() == len(y):
        raise PipelineError("the gallery gives no positive (or no negative) pair to train the verification head "
                            "on: it needs whales with two or more photos", "knn.verify")
    points = torch.from_numpy(np.vstack([vectors] + ([negatives] if negatives is not None and len(negatives) else [])))
    torch.manual_seed(seed)
    head = VerificationHead(vectors.shape[1], int(cfg["verify_hidden"]))
    optimizer = torch.optim.Adam(head.parameters(), lr=float(cfg["verify_lr"]), weight_decay=1e-4)
    # No class weights: the probability keeps the mined pairs' own prior.
    loss_fn = nn.BCEWithLogitsLoss()
    a_t, b_t, y_t = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(int(cfg["verify_epochs"])):
        order = torch.randperm(len(y_t), generator=generator)
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            loss = loss_fn(head(points[a_t[idx]], points[b_t[idx]]), y_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def rescore(head: VerificationHead, queries: np.ndarray, names, gallery_vectors: np.ndarray, gallery_ids: np.ndarray,
            sims: np.ndarray, idx: np.ndarray, table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Each query's `verify_top` whales re-scored: the highest 'same whale' probability over the whale's
    `verify_photos` best-matching gallery photos among the query's neighbours, blended with the
    retrieval score as verify_weight * probability + (1 - verify_weight) * score."""
    top, per_whale = int(cfg["verify_top"]), int(cfg["verify_photos"])
    keep = table.groupby(C.IMAGE, sort=False).head(top)
    from pipeline.retrieval.retriever import candidate_neighbours

    pairs = candidate_neighbours(idx, gallery_ids, names, keep, per_whale)
    q_rows, g_rows = [q for q, _, _ in pairs], [idx[q, j] for q, j, _ in pairs]
    keys = [(names[q], whale) for q, _, whale in pairs]
    p = head.probability(queries[q_rows], gallery_vectors[g_rows]) if q_rows else np.zeros(0, np.float32)
    scored = pd.DataFrame(keys, columns=[C.IMAGE, C.ID]).assign(**{C.SCORE: p.astype(np.float32)})
    scored = scored.groupby([C.IMAGE, C.ID], sort=False)[C.SCORE].max().reset_index()
    w = float(cfg["verify_weight"])
    if w < 1:
        before = keep.set_index([C.IMAGE, C.ID])[C.SCORE]
        retrieval = before.reindex(pd.MultiIndex.from_frame(scored[[C.IMAGE, C.ID]])).to_numpy()
        scored[C.SCORE] = (w * scored[C.SCORE] + (1 - w) * retrieval).astype(np.float32)
    return scored.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").reset_index(drop=True)
