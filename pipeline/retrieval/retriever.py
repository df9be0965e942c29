"""The one retriever: gallery embeddings in, one score per known whale out (plus, when asked, each
candidate's best-matching gallery photos from the same search that scored it). knn, the ensemble,
identify, the web page and the report all go through it.

    retriever = Retriever.from_config(cfg)
    result = retriever.search(fold_gallery(vectors, folds, fold), queries, names, photos=3)
    result.scores   # Image, Id, score: each query's best knn.keep_top whales, best first
    result.photos   # Image, Id, photo, similarity: each candidate's best gallery photos

`result` is a RetrievalResult (retrieval/result.py): immutable, checked when built, and what every
re-scorer takes and gives back (retrieval/postprocess/base.py).

Aggregation (`knn.aggregation`): `max`, a whale scores its best photo's cosine; `centroid`, a whale
scores the cosine to the mean of its photos' embeddings (the 3rd-place humpback solution). Optional
post-processing, each a config key (retrieval/rerank.py): database-side augmentation (`knn.dba_k`),
alpha query expansion (`knn.qe_k`, `knn.qe_alpha`) and k-reciprocal re-ranking (`knn.rerank`); then
the re-scorers of a shortlist: the verification head (`knn.verify`, retrieval/verification.py) and
local-feature matching (`knn.local`, retrieval/postprocess/local.py; it needs the photos' descriptors:
`Retriever.from_config(cfg, descriptors=DescriptorStore.open(...))`, and per search the queries' own,
`query_features=retriever.cached_features(names, split)` or `retriever.photo_features(photos)`).

A fold model k searches the gallery it was trained on (the known photos outside fold k) both for its
validation queries and for test queries, so the out-of-fold scores that fit the new_whale policy and
the test scores it is applied to share one scale; scores.fuse_models averages a whale's score over the
fold models that know it (a model whose gallery lacks the whale abstains instead of voting a floor).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.registry import Registry
from pipeline.retrieval.index import search
from pipeline.retrieval.photos import photos_by_similarity, photos_from_neighbours
from pipeline.retrieval.result import RetrievalResult
from pipeline.retrieval.scores import rank_whales

# knn.aggregation: name -> how a query's whales are scored, and which gallery photos show each candidate.
AGGREGATIONS = Registry("aggregation", "knn.aggregation")


@dataclass(eq=False)
class Gallery:
    """The photos a query is searched against. Its faiss index is built once (on the first search
    with given index options) and kept; `append` adds photos to the arrays and to that index, so a
    growing gallery (a catalogue's confirmed photos) is never rebuilt per request."""
    vectors: np.ndarray  # L2-normalised, one row per photo
    ids: np.ndarray  # whale of each row
    names: np.ndarray  # photo of each row
    negatives: np.ndarray | None = None  # train's new_whale photos beside it (verification negatives)

    def __post_init__(self):
        self._indexes: dict = {}  # index options -> faiss index over `vectors`
        self._codes = None  # (whales, code of each row), kept up to date by append
        self._rows_by_whale = None
        self._size = len(self.ids)  # rows in use of the (growable) buffers below
        self._buffers = None  # (vectors, ids, names) with room to append, once the first append happens

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, options: dict):
        from pipeline.retrieval.index import build_index, check_embeddings

        key = tuple(sorted(options.items()))
        if key not in self._indexes:
            self._indexes[key] = build_index(check_embeddings(self.vectors, "gallery"), **options)
        return self._indexes[key]

    def search(self, queries: np.ndarray, k: int, options: dict) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), queries x k, best first, from the kept index."""
        from pipeline.retrieval.index import check_embeddings

        k = min(int(k), len(self))
        return self.index(options).search(check_embeddings(queries, "queries"), k)

    def append(self, vectors: np.ndarray, ids, names) -> None:
        """Adds photos (rows of L2-normalised vectors) to the gallery and to every index built so far.
        The arrays grow by doubling, so n appends cost O(n) copies in all, not O(n) each."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        ids, names = np.asarray(ids, dtype=object), np.asarray(names, dtype=object)
        n, extra = self._size, len(vectors)
        if self._buffers is None or len(self._buffers[0]) < n + extra:
            room = max(2 * (n + extra), 64)
            grown = (np.empty((room, self.vectors.shape[1]), np.float32), np.empty(room, object), np.empty(room, object))
            for buffer, current in zip(grown, (self.vectors, self.ids, self.names)):
                buffer[:n] = current
            self._buffers = grown
        for buffer, new in zip(self._buffers, (vectors, ids, names)):
            buffer[n:n + extra] = new
        self._size = n + extra
        self.vectors, self.ids, self.names = (b[:self._size] for b in self._buffers)
        for index in self._indexes.values():
            index.add(vectors)
        if self._codes is not None:  # extend the codes: a new whale takes the next code
            whales, codes = self._codes
            lookup = self._whale_lookup()
            added = []
            for whale in ids:
                if whale not in lookup:
                    lookup[whale] = len(lookup)
                    added.append(whale)
            new_codes = np.array([lookup[w] for w in ids], dtype=np.int64)
            self._codes = (np.concatenate([whales, np.asarray(added, dtype=object)]) if added else whales,
                           np.concatenate([codes, new_codes]))
        self._rows_by_whale = None

    def relabel(self, ids: np.ndarray) -> None:
        """New whale ids for the same rows (a merge or split): the vectors and indexes stay."""
        if len(ids) != len(self.ids):
            raise ValueError("relabel needs one id per gallery row")
        self.ids = np.asarray(ids, dtype=object)
        if self._buffers is not None:
            self._buffers[1][:self._size] = self.ids
            self.ids = self._buffers[1][:self._size]
        self._codes = self._rows_by_whale = None

    def whale_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct whales, each row's position among them)."""
        if self._codes is None:
            whales, codes = np.unique(np.asarray(self.ids, dtype=str), return_inverse=True)
            self._codes = (whales.astype(object), codes.astype(np.int64))
            self._lookup = None
        return self._codes

    def whale_set(self):
        """The gallery's whales, for membership tests: the keys of the codes' lookup, which append and
        relabel already keep current (no copy of its own to keep)."""
        self.whale_codes()
        return self._whale_lookup().keys()

    def _whale_lookup(self) -> dict:
        """whale -> code, kept beside the codes (append extends both)."""
        if getattr(self, "_lookup", None) is None or len(self._lookup) != len(self._codes[0]):
            self._lookup = {w: i for i, w in enumerate(self._codes[0])}
        return self._lookup

    def rows_by_whale(self) -> dict:
        """whale -> its gallery rows."""
        if self._rows_by_whale is None:
            whales, codes = self.whale_codes()
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(whales) + 1))
            self._rows_by_whale = {w: order[bounds[i]:bounds[i + 1]] for i, w in enumerate(whales)}
        return self._rows_by_whale


def fold_gallery(vectors: np.ndarray, folds: pd.DataFrame, fold: int) -> Gallery:
    """Fold model k's gallery: the known-whale photos outside validation fold k (what it trained on),
    and train's new_whale photos outside fold k as negatives. `vectors` are the fold model's embeddings
    of folds' photos, in folds' row order."""
    outside = (folds[C.FOLD] != fold).to_numpy()
    known = (folds[C.ID] != C.NEW_WHALE).to_numpy()
    mask = known & outside
    return Gallery(vectors[mask], folds[C.ID].to_numpy()[mask], folds[C.IMAGE].to_numpy()[mask],
                   vectors[~known & outside])


class Retriever:
    def __init__(self, knn_cfg: dict, seed: int = 0, descriptors=None):
        from pipeline.retrieval import postprocess

        self.cfg, self.seed = knn_cfg, int(seed)
        self.aggregation = AGGREGATIONS.get(knn_cfg["aggregation"])()
        self.postprocessors = postprocess.build(knn_cfg, self.seed, descriptors)  # verify, local, ... (postprocess/)

    def readers(self) -> list:
        """The re-scorers that read per-query features (each declares which: postprocess/base.py)."""
        return [p for p in self.postprocessors if getattr(p, "reads", None)]

    def photo_features(self, photos: list) -> dict:
        """kind -> each photo's features, for the re-scorers that read them (photos given as pixels)."""
        return {p.reads: p.photo_features(photos) for p in self.readers()}

    def cached_features(self, names, split: str) -> dict:
        """kind -> each named photo's features, for photos of the work folder's cache."""
        return {p.reads: p.cached_features(names, split) for p in self.readers()}

    @classmethod
    def from_config(cls, cfg: dict, descriptors=None) -> "Retriever":
        """`descriptors`: a local.extract.DescriptorStore of the gallery photos (needed with knn.local)."""
        return cls(cfg["knn"], cfg["seed"], descriptors)

    def _index_options(self) -> dict:
        k = self.cfg
        return {"kind": k["index"], "nlist": k["nlist"], "nprobe": k["nprobe"], "seed": self.seed}

    def search(self, gallery: Gallery, queries: np.ndarray, names, photos: int = 0,
               query_features: dict | None = None) -> RetrievalResult:
        """`query_features`: kind -> one entry per query, for the re-scorers that read them
        (`photo_features` or `cached_features` give them). `photos`: each candidate's best n gallery
        photos go into the result."""
        from pipeline.retrieval.postprocess.base import SearchContext

        names = np.asarray(names)
        if len(gallery) == 0:
            raise PipelineError("the gallery holds no known-whale photo", "folds file")
        from pipeline.retrieval import rerank

        vectors, queries = rerank.augment(gallery.vectors, queries, self.cfg, self._index_options())
        whales, codes, scores, sims, idx = self.aggregation.score(self, gallery, vectors, queries)
        q, r = np.nonzero(codes >= 0)
        result = RetrievalResult(pd.DataFrame({C.IMAGE: names[q], C.ID: whales[codes[q, r]],
                                               C.SCORE: scores[q, r].astype(np.float32)}))
        if self.postprocessors:
            ctx = SearchContext(gallery, names, queries, vectors, sims, idx, dict(query_features or {}),
                                {"index": self._index_options()})
            for processor in self.postprocessors:
                result = processor.process(result, ctx)
        if not photos:
            return result
        # The photos of the final candidates, chosen once after the re-scorers: a re-scorer may bring in
        # whales the first scoring did not keep (the verification head scores its verify_top whales).
        return result.with_photos(self.aggregation.photos(sims, idx, vectors, gallery, queries, names, result.scores,
                                                          photos))


@AGGREGATIONS.register("max")
class BestPhoto:
    """A whale scores its best photo's cosine among the query's neighbours (after re-ranking them)."""

    def score(self, retriever: Retriever, gallery: Gallery, vectors, queries):
        """(whales, codes, scores, neighbour similarities, neighbour rows): codes and scores queries x
        keep_top, best first, each code a position in whales (-1 pads)."""
        from pipeline.retrieval import rerank

        options, cfg = retriever._index_options(), retriever.cfg
        if vectors is gallery.vectors:  # no database-side augmentation: the gallery's kept index serves
            sims, idx = gallery.search(queries, cfg["neighbours"], options)
        else:
            sims, idx = search(vectors, queries, cfg["neighbours"], **options)
        sims, idx = rerank.rescore(vectors, queries, sims, idx, cfg, options)
        whales, gallery_codes = gallery.whale_codes()
        codes, scores = rank_whales(sims, idx, gallery_codes, int(cfg["keep_top"]))
        return whales, codes, scores, sims, idx

    def photos(self, sims, idx, vectors, gallery, queries, names, table, n):
        return photos_from_neighbours(sims, idx, gallery, names, table, n)


@AGGREGATIONS.register("centroid")
class Centroid:
    """A whale scores the cosine to the mean of its photos' embeddings (the 3rd-place humpback
    solution); no photo neighbours, so a candidate's photos are those nearest the query."""

    def score(self, retriever: Retriever, gallery: Gallery, vectors, queries):
        whales, centroids = whale_centroids(vectors, gallery.ids)
        scores, codes = search(centroids, queries, retriever.cfg["keep_top"], **retriever._index_options())
        return whales, codes, scores, None, None

    def photos(self, sims, idx, vectors, gallery, queries, names, table, n):
        return photos_by_similarity(vectors, gallery, queries, names, table, n)


def whale_centroids(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whales, their L2-normalised mean embeddings)."""
    whales, codes = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(whales), vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, vectors)
    sums /= np.maximum(1e-12, np.linalg.norm(sums, axis=1, keepdims=True))
    return whales, sums.astype(np.float32)
