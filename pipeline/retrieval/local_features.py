"""Local-feature matching: the training-free evidence of wildlife re-identification (HotSpotter-style
SIFT matching, as wildlife-tools ships it with SIFTFeatures + MatchDescriptors), used to re-score the
global retriever's shortlist, like the local-feature stage of the 4th-place 2019 humpback solution and
wildlife-tools' WildFusion (global descriptors shortlist, local matchers decide).

    descriptors   SIFT descriptors of each cached photo (at most `local_keypoints`), computed once per
                  work folder and stored beside the cache;
    match count   the number of gallery descriptors whose two nearest query descriptors pass Lowe's
                  ratio test (squared L2 distances, `local_ratio`): wildlife-tools' definition;
    re-scoring    each query's `local_top` whales: count = the best over the whale's `local_photos`
                  gallery photos nearest the query in embedding space; the score becomes
                  (1 - local_weight) * score + local_weight * count / (count + local_scale), and every
                  other whale keeps (1 - local_weight) * score, so the shortlist is re-ordered and the
                  scale stays one for the new_whale policy.

Switched on by `knn.local: true`; the retriever calls it, so knn, identify and the web page use it alike.
Counts between cached photos are saved for the runs that follow (match_cache.py).
"""
from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import torch

from pipeline import columns as C
from pipeline.errors import PipelineError

DESCRIPTOR_DIM = 128


def sift_descriptors(image: np.ndarray, max_keypoints: int) -> np.ndarray:
    """SIFT descriptors (n x 128, uint8) of an H x W x 3 uint8 RGB photo."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    _, found = cv2.SIFT_create(nfeatures=int(max_keypoints)).detectAndCompute(gray, None)
    if found is None or len(found) < 2:
        return np.zeros((0, DESCRIPTOR_DIM), dtype=np.uint8)
    # OpenCV's SIFT descriptors are integers 0..255 stored as float32: uint8 keeps them exactly.
    return np.clip(np.rint(found[: int(max_keypoints)]), 0, 255).astype(np.uint8)


def match_counts(query: np.ndarray, gallery: list[np.ndarray], ratio: float) -> np.ndarray:
    """For each gallery photo: how many of its descriptors have two nearest query descriptors whose
    squared distances pass d1 / d2 < ratio."""
    counts = np.zeros(len(gallery), dtype=np.int64)
    if len(query) < 2 or not gallery:
        return counts
    sizes = np.array([len(g) for g in gallery])
    if sizes.sum() == 0:
        return counts
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the distance matrices are the whole cost
    g = torch.from_numpy(np.concatenate(gallery).astype(np.float32)).to(device)
    q = torch.from_numpy(query.astype(np.float32)).to(device)
    squared = torch.cdist(g, q).pow(2)
    two = squared.topk(2, dim=1, largest=False).values
    passed = (two[:, 0] < ratio * two[:, 1]).cpu().numpy()
    owner = np.repeat(np.arange(len(gallery)), sizes)
    np.add.at(counts, owner, passed)
    return counts


class DescriptorStore:
    """SIFT descriptors of every photo of the image cache, computed once and kept in
    WORK/cache/local-sift-<keypoints>.npz (descriptors, and each cache row's offset into them)."""

    def __init__(self, manifest: pd.DataFrame, descriptors: np.ndarray, offsets: np.ndarray, path=None):
        self.rows = pd.Series(manifest[C.ROW].to_numpy(), index=pd.MultiIndex.from_frame(manifest[[C.SPLIT, C.IMAGE]]))
        self.descriptors, self.offsets = descriptors, offsets
        self.path = path  # the file they were read from: the saved match counts belong to it
        self._arrays: dict[int, np.ndarray] = {}
        self._row_of: dict[int, int] = {}  # id(array handed out) -> its cache row

    @classmethod
    def open(cls, work, max_keypoints: int) -> "DescriptorStore":
        from pipeline.data.cache import ImageCache
        from pipeline.io.atomic import write_npz
        from pipeline.progress import track

        cache = ImageCache.open(work)
        path = cache.folder / f"local-sift-{int(max_keypoints)}.npz"
        if path.is_file() and path.stat().st_mtime >= (cache.folder / "images.npy").stat().st_mtime:
            saved = np.load(path)
            if len(saved["offsets"]) == len(cache.images) + 1:
                return cls(cache.manifest, saved["descriptors"], saved["offsets"], path)
        parts = [sift_descriptors(cache.images[row], max_keypoints)
                 for row in track(range(len(cache.images)), len(cache.images), "local features", unit="photo")]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        descriptors = np.concatenate(parts) if parts else np.zeros((0, DESCRIPTOR_DIM), dtype=np.uint8)
        write_npz(path, descriptors=descriptors, offsets=offsets)
        return cls(cache.manifest, descriptors, offsets, path)

    def cache_rows(self, names, split: str) -> np.ndarray:
        """The image cache rows of the named photos of one split."""
        try:
            return self.rows.loc[[(split, n) for n in names]].to_numpy()
        except KeyError:
            missing = [n for n in names if (split, n) not in self.rows.index]
            raise PipelineError(f"{len(missing)} photo(s) not in the image cache (first: {missing[0]}); "
                                "re-run preprocess", "knn.local") from None

    def get(self, names, split: str) -> list[np.ndarray]:
        """The descriptors of the named photos of one split, in order (the same array objects each call)."""
        out = []
        for row in self.cache_rows(names, split).tolist():
            if row not in self._arrays:
                self._arrays[row] = self.descriptors[self.offsets[row]:self.offsets[row + 1]]
                self._row_of[id(self._arrays[row])] = row  # the array lives as long as the store: ids stay unique
            out.append(self._arrays[row])
        return out

    def row_of(self, descriptors: np.ndarray) -> int | None:
        """The cache row of an array this store handed out; None for any other (a photo outside the cache)."""
        return self._row_of.get(id(descriptors))


class LocalMatcher:
    """Re-scores a retrieval table with match counts; remembers counts already computed (a test photo
    meets the same gallery photos in several fold models) for as long as the query's descriptor array
    lives: the store's arrays live with it, a photo given to identify only for its own request. Counts
    between two cached photos are also saved beside the descriptors for the next run (match_cache.py)."""

    def __init__(self, store: DescriptorStore | None, cfg: dict):
        self.store, self.cfg = store, cfg
        self._counts: dict[int, dict[str, int]] = {}  # id(query descriptors) -> gallery photo -> count
        self._saved = None  # match_cache.SavedMatches, read when a cached photo is first matched

    def _saved_matches(self):
        if self._saved is None:
            from pipeline.retrieval.match_cache import SavedMatches

            self._saved = SavedMatches.beside(self.store.path, float(self.cfg["local_ratio"]))
        return self._saved

    def rescore(self, table: pd.DataFrame, query_descriptors: list[np.ndarray], names, vectors: np.ndarray,
                queries: np.ndarray, gallery) -> pd.DataFrame:
        """Blends each query's `local_top` whales' scores with their best match count (module docstring)."""
        if self.store is None:
            raise PipelineError("knn.local needs the photos' local descriptors (the image cache)", "knn.local")
        from pipeline.retrieval.retriever import photos_by_similarity

        cfg = self.cfg
        weight, scale = float(cfg["local_weight"]), float(cfg["local_scale"])
        shortlist = table.groupby(C.IMAGE, sort=False).head(int(cfg["local_top"]))
        candidates = photos_by_similarity(vectors, gallery, queries, names, shortlist, int(cfg["local_photos"]))
        position = {name: q for q, name in enumerate(names)}
        best: dict[tuple[str, str], int] = {}
        for name, group in candidates.groupby(C.IMAGE, sort=False):
            query = query_descriptors[position[name]]
            photos = group["photo"].tolist()
            counts = self._match(query, photos)
            for whale, count in zip(group[C.ID], counts):
                key = (name, whale)
                best[key] = max(best.get(key, 0), int(count))
        if self._saved is not None:
            self._saved.save()
        keys = list(zip(table[C.IMAGE], table[C.ID]))
        count = np.array([best.get(k, -1) for k in keys], dtype=np.float64)
        local = np.where(count >= 0, np.maximum(count, 0) / (np.maximum(count, 0) + scale), 0.0)
        out = table.assign(**{C.SCORE: ((1 - weight) * table[C.SCORE].to_numpy() + weight * local).astype(np.float32)})
        return out.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").reset_index(drop=True)

    def _match(self, query: np.ndarray, photos: list[str]) -> list[int]:
        key = id(query)
        if key not in self._counts:
            self._counts[key] = {}
            # Forget the counts when the array dies, before its id can be reused.
            weakref.finalize(query, self._counts.pop, key, None)
        known = self._counts[key]
        todo = [p for p in dict.fromkeys(photos) if p not in known]
        # A photo of the work folder's cache: counts saved by earlier runs apply (match_cache.py).
        row = self.store.row_of(query) if todo and self.store.path is not None else None
        if row is not None:
            rows = dict(zip(todo, self.store.cache_rows(todo, C.TRAIN).tolist()))
            saved = self._saved_matches().get(row, list(rows.values()))
            known.update({p: c for p, c in zip(todo, saved) if c is not None})
            todo = [p for p in todo if p not in known]
        if todo:
            counts = match_counts(query, self.store.get(todo, C.TRAIN), float(self.cfg["local_ratio"]))
            known.update({p: int(c) for p, c in zip(todo, counts)})
            if row is not None:
                self._saved_matches().add(row, [rows[p] for p in todo], counts)
        return [known[p] for p in photos]
