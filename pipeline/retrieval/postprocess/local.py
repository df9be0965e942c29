"""Local-feature matching as a re-scorer (retrieval/local/): each query's `local_top` whales get the
best count over the whale's `local_photos` gallery photos nearest the query in embedding space, and
their scores become a blend of score and count (or calibrated probabilities); see local/calibrate.py.
Like the local-feature stage of the 4th-place 2019 humpback solution and wildlife-tools' WildFusion:
global descriptors shortlist, local matchers decide. Counts between cached photos are saved for the
runs that follow (local/saved.py)."""
from __future__ import annotations

import weakref

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.retrieval.local import calibrate, collect
from pipeline.retrieval.local.extract import sift_descriptors
from pipeline.retrieval.local.match import MatchSettings
from pipeline.retrieval.photos import photos_by_similarity
from pipeline.retrieval.postprocess.base import SearchContext, register
from pipeline.retrieval.result import RetrievalResult


class LocalMatcher:
    """Re-scores a retrieval table with match counts; remembers counts already computed (a test photo
    meets the same gallery photos in several fold models) for as long as the query's descriptor array
    lives: the store's arrays live with it, a photo given to identify only for its own request. Counts
    between two cached photos are also saved beside the descriptors for the next run (local/saved.py)."""

    def __init__(self, store, cfg: dict):
        self.store, self.cfg = store, cfg
        self.settings = MatchSettings.from_knn(cfg)
        self._counts: dict[int, dict[str, int]] = {}  # id(query descriptors) -> gallery photo -> count
        self._saved = None  # saved.SavedMatches, read when a cached photo is first matched

    def _saved_matches(self):
        if self._saved is None:
            from pipeline.retrieval.local.saved import SavedMatches

            self._saved = SavedMatches.beside(self.store.path, self.settings.tag())
        return self._saved

    def counts(self, table: pd.DataFrame, query_descriptors: list[np.ndarray], names, vectors: np.ndarray,
               queries: np.ndarray, gallery) -> np.ndarray:
        """Each row's best count over its whale's `local_photos` photos; -1 outside each query's `local_top`."""
        if self.store is None:
            raise PipelineError("knn.local needs the photos' local descriptors (the image cache)", "knn.local")
        shortlist = table.groupby(C.IMAGE, sort=False).head(int(self.cfg["local_top"]))
        candidates = photos_by_similarity(vectors, gallery, queries, names, shortlist, int(self.cfg["local_photos"]))
        position = {name: q for q, name in enumerate(names)}
        best: dict[tuple[str, str], int] = {}
        for name, group in candidates.groupby(C.IMAGE, sort=False):
            counts = self._match(query_descriptors[position[name]], group["photo"].tolist())
            for whale, count in zip(group[C.ID], counts):
                best[(name, whale)] = max(best.get((name, whale), 0), int(count))
        if self._saved is not None:
            self._saved.save()
        return np.array([best.get(k, -1) for k in zip(table[C.IMAGE], table[C.ID])], dtype=np.float64)

    def rescore(self, table: pd.DataFrame, query_descriptors: list[np.ndarray], names, vectors: np.ndarray,
                queries: np.ndarray, gallery, raw: bool = False) -> pd.DataFrame:
        """The table re-scored with each row's count (local/calibrate.py). `raw`, with knn.local_calibrate:
        the scores left as they are and each row's count beside them, for the knn stage to fit the
        calibration on."""
        count = self.counts(table, query_descriptors, names, vectors, queries, gallery)
        if self.cfg.get("local_calibrate"):
            if raw:
                return calibrate.with_counts(table, count)
            return calibrate.calibrated(table, count, self.cfg.get("local_calibration"))
        return calibrate.blend(table, count, float(self.cfg["local_weight"]), float(self.cfg["local_scale"]))

    def _match(self, query: np.ndarray, photos: list[str]) -> list[int]:
        key = id(query)
        if key not in self._counts:
            self._counts[key] = {}
            # Forget the counts when the array dies, before its id can be reused.
            weakref.finalize(query, self._counts.pop, key, None)
        known = self._counts[key]
        todo = [p for p in dict.fromkeys(photos) if p not in known]
        # A photo of the work folder's cache: counts saved by earlier runs apply (local/saved.py).
        row = self.store.row_of(query) if todo and self.store.path is not None else None
        if row is not None:
            rows = dict(zip(todo, self.store.cache_rows(todo, C.TRAIN).tolist()))
            saved = self._saved_matches().get(row, list(rows.values()))
            known.update({p: c for p, c in zip(todo, saved) if c is not None})
            todo = [p for p in todo if p not in known]
        if todo:
            counts = collect.local_scores(query, self.store.get(todo, C.TRAIN), self.settings)
            known.update({p: int(c) for p, c in zip(todo, counts)})
            if row is not None:
                self._saved_matches().add(row, [rows[p] for p in todo], counts)
        return [known[p] for p in photos]


@register("local")
class LocalMatching:
    """knn.local: the local evidence for each query's shortlist. It reads each query photo's SIFT
    descriptors (`local` features, one variant per knn.local_keypoints)."""
    reads = "local"

    def __init__(self, cfg: dict, seed: int, descriptors=None):
        self.matcher = LocalMatcher(descriptors, cfg)
        self.feature_key = int(cfg.get("local_keypoints", 500))
        self.raw = bool(cfg.get("local_raw", False))  # the knn stage fitting knn.local_calibrate

    def photo_features(self, photos: list[np.ndarray]) -> list:
        return [sift_descriptors(photo, self.feature_key) for photo in photos]

    def cached_features(self, names, split: str) -> list:
        return self.matcher.store.get(names, split)

    @property
    def store(self):
        """The gallery photos' descriptors (local.extract.DescriptorStore or bundle.NamedDescriptors)."""
        return self.matcher.store

    def process(self, result: RetrievalResult, ctx: SearchContext) -> RetrievalResult:
        features = ctx.query_features.get(self.reads)
        if features is None:
            raise PipelineError("knn.local needs the query photos' local descriptors", "knn.local")
        return result.rescored(self.matcher.rescore(result.scores, features, ctx.names, ctx.vectors, ctx.queries,
                                                    ctx.gallery, raw=self.raw))

    def rescore(self, table: pd.DataFrame, query_descriptors: list, names, vectors: np.ndarray, queries: np.ndarray,
                gallery) -> pd.DataFrame:
        """A long table re-scored through `process`, for scores made outside a search (the ensemble's
        classifier probabilities: no neighbours, so a candidate's photos are those nearest the query)."""
        ctx = SearchContext(gallery, np.asarray(names), queries, vectors, None, None, {self.reads: query_descriptors})
        return self.process(RetrievalResult(table), ctx).scores
