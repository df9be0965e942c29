"""A siamese verification head: identification as verification ("is this query that whale?"), the
pairwise re-ranker of the 4th-place 2019 humpback solution and of OML.

For a query and one candidate whale of its shortlist the head outputs the probability that the query
shows that whale, from
  embedding features   [|a - b|, a * b] of the query and the whale's best-matching gallery photo;
  retrieval features   what means the same in any embedding space: the best photo's cosine, the mean
                       cosine of the whale's `verify_photos` best photos, the gap to the query's best
                       neighbour, the whale's rank in the shortlist, the share of its photos found;
(`verify_features`: `both`, `embedding` or `retrieval`) through a small MLP.

Its training pairs are mined as the retriever will meet them. Every photo of the gallery (fold k's
training photos) is in turn a query against the rest of the gallery (leave one out), and its first
`verify_top` whales are its candidates, labelled right or wrong; train's new_whale photos outside the
fold are queries whose candidates are all wrong (hard negatives from the kNN shortlist). A whale of
one photo becomes, left out, a query of an unknown whale, as test holds them. So the head learns
P(right whale) over the population of (query, whale) pairs it will score, with the share of right ones
a real shortlist has: the probability needs no separate calibration, up to the gap between photos the
network trained on and new ones (`make bench-retrieval` prints its reliability on out-of-fold pairs).

It re-scores each query's `verify_top` whales with that probability (`verify_weight` below 1 blends it
with the retrieval score), so the new_whale policy is fitted on probabilities. Switched on by
`knn.verify: true`; the retriever (retrieval/retriever.py) calls it, so knn, identify and the web page
all use it alike.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.retrieval.index import search

FEATURES = ("both", "embedding", "retrieval")
RETRIEVAL_FEATURES = 5


class VerificationHead(nn.Module):
    def __init__(self, dim: int, hidden: int, features: str = "both"):
        super().__init__()
        if features not in FEATURES:
            raise PipelineError(f"unknown verification features {features!r}; use one of {', '.join(FEATURES)}",
                                "knn.verify_features")
        self.features = features
        width = (2 * dim if features != "retrieval" else 0) + (RETRIEVAL_FEATURES if features != "embedding" else 0)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def pair_features(self, a: torch.Tensor, b: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        parts = [] if self.features == "retrieval" else [(a - b).abs(), a * b]
        return torch.cat(parts + ([] if self.features == "embedding" else [stats]), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Logit of 'the query shows this whale' for each row (query a, whale's best photo b, stats)."""
        return self.mlp(self.pair_features(a, b, stats)).squeeze(1)

    @torch.no_grad()
    def probability(self, a: np.ndarray, b: np.ndarray, stats: np.ndarray) -> np.ndarray:
        self.eval()
        return torch.sigmoid(self(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(stats))).numpy()


def shortlist(sims: np.ndarray, idx: np.ndarray, gallery_codes: np.ndarray, top: int,
              per_whale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query's first `top` whales among its neighbours (best first), as the rows of
    (query row, whale code, gallery row of its best photo, retrieval features)."""
    rows, codes, best, stats = [], [], [], []
    for q in range(len(idx)):
        valid = idx[q] >= 0
        if not valid.any():
            continue
        found: dict[int, list[int]] = {}
        for j in np.flatnonzero(valid):
            code = int(gallery_codes[idx[q, j]])
            if code in found:
                if len(found[code]) < per_whale:
                    found[code].append(j)
            elif len(found) < top:
                found[code] = [j]
        first = float(sims[q, np.argmax(valid)])
        for rank, (code, cols) in enumerate(found.items()):
            s = sims[q, cols]
            rows.append(q), codes.append(code), best.append(idx[q, cols[0]])
            stats.append((s[0], s.mean(), first - s[0], np.log1p(rank), len(cols) / per_whale))
    return (np.array(rows, dtype=np.int64), np.array(codes, dtype=np.int64), np.array(best, dtype=np.int64),
            np.array(stats, dtype=np.float32).reshape(-1, RETRIEVAL_FEATURES))


def leave_one_out(vectors: np.ndarray, k: int, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each gallery photo's k nearest other gallery photos (itself removed)."""
    sims, idx = search(vectors, vectors, min(len(vectors), k + 1), **options)
    other = idx != np.arange(len(vectors))[:, None]
    # Stable: the photo's own entry moves to the end of its row, the rest keep their order.
    order = np.argsort(~other, axis=1, kind="stable")[:, : idx.shape[1] - 1]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


def mine_pairs(vectors: np.ndarray, ids: np.ndarray, negatives: np.ndarray | None, cfg: dict,
               options: dict) -> dict[str, np.ndarray]:
    """Training rows of the head: query (row into np.vstack([vectors, negatives])), the candidate whale's
    best photo (row into vectors), retrieval features, and whether the whale is the query's."""
    _, codes = np.unique(ids, return_inverse=True)
    top, per_whale, k = int(cfg["verify_top"]), int(cfg["verify_photos"]), int(cfg["neighbours"])
    sims, idx = leave_one_out(vectors, k, options)
    q, code, best, stats = shortlist(sims, idx, codes, top, per_whale)
    label = (code == codes[q]).astype(np.float32)
    if negatives is not None and len(negatives):
        sims, idx = search(vectors, negatives, min(len(vectors), k), **options)
        nq, _, nbest, nstats = shortlist(sims, idx, codes, top, per_whale)
        q, best = np.concatenate([q, len(vectors) + nq]), np.concatenate([best, nbest])
        stats, label = np.concatenate([stats, nstats]), np.concatenate([label, np.zeros(len(nq), np.float32)])
    return {"query": q, "photo": best, "stats": stats, "label": label}


def fit_head(vectors: np.ndarray, ids: np.ndarray, negatives: np.ndarray | None, cfg: dict, options: dict,
             seed: int = 0) -> VerificationHead:
    pairs = mine_pairs(vectors, ids, negatives, cfg, options)
    y = pairs["label"]
    if y.sum() == 0 or y.sum() == len(y):
        raise PipelineError("the gallery gives no right (or no wrong) candidate to train the verification head "
                            "on: it needs whales with two or more photos", "knn.verify")
    points = torch.from_numpy(np.vstack([vectors] + ([negatives] if negatives is not None and len(negatives) else [])))
    photos = torch.from_numpy(vectors)
    torch.manual_seed(seed)
    head = VerificationHead(vectors.shape[1], int(cfg["verify_hidden"]), str(cfg["verify_features"]))
    optimizer = torch.optim.Adam(head.parameters(), lr=float(cfg["verify_lr"]), weight_decay=1e-4)
    # No class weights: the probability keeps the share of right candidates a shortlist really has.
    loss_fn = nn.BCEWithLogitsLoss()
    q, b = torch.from_numpy(pairs["query"]), torch.from_numpy(pairs["photo"])
    stats, y_t = torch.from_numpy(pairs["stats"]), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(int(cfg["verify_epochs"])):
        order = torch.randperm(len(y_t), generator=generator)
        for start in range(0, len(order), 256):
            i = order[start:start + 256]
            loss = loss_fn(head(points[q[i]], photos[b[i]], stats[i]), y_t[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def rescore(head: VerificationHead, queries: np.ndarray, names, gallery_vectors: np.ndarray, gallery_ids: np.ndarray,
            sims: np.ndarray, idx: np.ndarray, table: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Each query's `verify_top` whales re-scored with P(the query shows the whale), blended with the
    retrieval score as verify_weight * probability + (1 - verify_weight) * score."""
    whales, codes = np.unique(gallery_ids, return_inverse=True)
    q, code, best, stats = shortlist(sims, idx, codes, int(cfg["verify_top"]), int(cfg["verify_photos"]))
    p = head.probability(queries[q], gallery_vectors[best], stats) if len(q) else np.zeros(0, np.float32)
    scored = pd.DataFrame({C.IMAGE: np.asarray(names)[q], C.ID: whales[code], C.SCORE: p.astype(np.float32)})
    w = float(cfg["verify_weight"])
    if w < 1:
        before = table.set_index([C.IMAGE, C.ID])[C.SCORE]
        retrieval = before.reindex(pd.MultiIndex.from_frame(scored[[C.IMAGE, C.ID]])).to_numpy()
        scored[C.SCORE] = (w * scored[C.SCORE] + (1 - w) * retrieval).astype(np.float32)
    return scored.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").reset_index(drop=True)
