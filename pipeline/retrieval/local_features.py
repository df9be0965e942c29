"""Local-feature matching: the training-free evidence of wildlife re-identification (HotSpotter-style
SIFT matching, as wildlife-tools ships it with SIFTFeatures + MatchDescriptors), used to re-score the
global retriever's shortlist, like the local-feature stage of the 4th-place 2019 humpback solution and
wildlife-tools' WildFusion (global descriptors shortlist, local matchers decide).

    descriptors   SIFT descriptors of each cached photo (at most `local_keypoints`), computed once per
                  work folder and stored beside the cache;
    match count   the number of gallery descriptors whose two nearest query descriptors pass Lowe's
                  ratio test (squared L2 distances, `local_ratio`): wildlife-tools' definition; with
                  `local_geometry` (homography by default) only those one transform explains count;
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


class LocalFeatures(np.ndarray):
    """SIFT descriptors (n x 128 uint8) that carry their keypoints: `.points`, n x 4 float32 (x, y,
    size, angle in the pixels of the photo they came from). An ndarray, so code that only counts
    ratio-test matches reads them as plain descriptors; geometric verification reads the points."""

    def __new__(cls, descriptors, points):
        obj = np.asarray(descriptors, dtype=np.uint8).reshape(-1, DESCRIPTOR_DIM).view(cls)
        obj.points = np.asarray(points, dtype=np.float32).reshape(-1, 4)
        return obj

    def __array_finalize__(self, obj):
        self.points = getattr(obj, "points", None)


def empty_features() -> LocalFeatures:
    return LocalFeatures(np.zeros((0, DESCRIPTOR_DIM), np.uint8), np.zeros((0, 4), np.float32))


def sift_descriptors(image: np.ndarray, max_keypoints: int) -> LocalFeatures:
    """SIFT descriptors (n x 128, uint8) of an H x W x 3 uint8 RGB photo, with their keypoints."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    keypoints, found = cv2.SIFT_create(nfeatures=int(max_keypoints)).detectAndCompute(gray, None)
    if found is None or len(found) < 2:
        return empty_features()
    n = min(len(found), int(max_keypoints))
    points = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in keypoints[:n]], dtype=np.float32)
    # OpenCV's SIFT descriptors are integers 0..255 stored as float32: uint8 keeps them exactly.
    return LocalFeatures(np.clip(np.rint(found[:n]), 0, 255).astype(np.uint8), points)


def _as_float(descriptors: np.ndarray, rootsift: bool) -> np.ndarray:
    """float32 descriptors; RootSIFT (Arandjelovic & Zisserman 2012): L1-normalised, then square-rooted,
    so that Euclidean distance between them is the Hellinger distance between the originals."""
    x = np.asarray(descriptors, dtype=np.float32)
    if rootsift:
        x = np.sqrt(x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12))
    return x


def _nearest_two(query: np.ndarray, gallery: list[np.ndarray], rootsift: bool = False):
    """For every gallery descriptor (all photos stacked): its two smallest squared distances to the
    query's descriptors and the index of the nearest; and the photo each stacked row belongs to."""
    sizes = np.array([len(g) for g in gallery])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the distance matrices are the whole cost
    g = torch.from_numpy(_as_float(np.concatenate([np.asarray(x) for x in gallery]), rootsift)).to(device)
    q = torch.from_numpy(_as_float(np.asarray(query), rootsift)).to(device)
    two = torch.cdist(g, q).pow(2).topk(2, dim=1, largest=False)
    return two.values.cpu().numpy(), two.indices[:, 0].cpu().numpy(), np.repeat(np.arange(len(gallery)), sizes)


def match_counts(query: np.ndarray, gallery: list[np.ndarray], ratio: float, rootsift: bool = False) -> np.ndarray:
    """For each gallery photo: how many of its descriptors have two nearest query descriptors whose
    squared distances pass d1 / d2 < ratio."""
    counts = np.zeros(len(gallery), dtype=np.int64)
    if len(query) < 2 or not gallery or sum(len(g) for g in gallery) == 0:
        return counts
    two, _, owner = _nearest_two(query, gallery, rootsift)
    np.add.at(counts, owner, two[:, 0] < ratio * two[:, 1])
    return counts


GEOMETRIES = ("none", "homography", "fundamental")


def inlier_counts(query: LocalFeatures, gallery: list[LocalFeatures], ratio: float, geometry: str = "homography",
                  min_matches: int = 8, pixels: float = 4.0, rootsift: bool = False) -> np.ndarray:
    """For each gallery photo: the number of its ratio-test matches that agree with one geometric
    transform, estimated robustly by OpenCV's USAC MAGSAC++ (a homography: a flat, rigid pattern such
    as a fluke seen from another angle; a fundamental matrix: any rigid scene, HotSpotter's and
    wildlife-tools' CollectCountsRansac choice). Each query keypoint is used once (its best match); a
    photo with fewer than `min_matches` matches, or whose estimate fails, scores 0."""
    from pipeline.retrieval.geometry import ransac_inliers

    counts = np.zeros(len(gallery), dtype=np.int64)
    if len(query) < 2 or not gallery or sum(len(g) for g in gallery) == 0:
        return counts
    two, nearest, owner = _nearest_two(query, gallery, rootsift)
    passed = two[:, 0] < ratio * two[:, 1]
    starts = np.concatenate([[0], np.cumsum([len(g) for g in gallery])])
    for p, photo in enumerate(gallery):
        rows = np.nonzero(passed[starts[p]:starts[p + 1]])[0]
        if len(rows) < min_matches:
            continue
        strength = two[starts[p] + rows, 0] / np.maximum(two[starts[p] + rows, 1], 1e-12)
        q_index = nearest[starts[p] + rows]
        order = np.lexsort((strength, q_index))  # per query keypoint, its best gallery match first
        first = np.ones(len(order), dtype=bool)
        first[1:] = q_index[order][1:] != q_index[order][:-1]
        keep = order[first]
        if len(keep) < min_matches:
            continue
        counts[p] = ransac_inliers(photo.points[rows[keep], :2], query.points[q_index[keep], :2], geometry, pixels).sum()
    return counts


def local_scores(query, gallery, cfg: dict) -> np.ndarray:
    """The configured local score of each gallery photo against the query: ratio-test counts
    (knn.local_geometry none) or geometrically verified inliers."""
    geometry = cfg.get("local_geometry", "none")
    if geometry not in GEOMETRIES:
        raise PipelineError(f"unknown local geometry {geometry!r}; use {', '.join(GEOMETRIES)}", "knn.local_geometry")
    rootsift = bool(cfg.get("local_rootsift", False))
    if geometry == "none":
        return match_counts(query, gallery, float(cfg["local_ratio"]), rootsift)
    return inlier_counts(query, gallery, float(cfg["local_ratio"]), geometry, int(cfg.get("local_min_matches", 8)),
                         float(cfg.get("local_ransac_px", 4.0)), rootsift)


def scorer_tag(cfg: dict) -> str:
    """What a saved count depends on besides the descriptors (match_cache.py names its file by it)."""
    tag = f"-r{float(cfg['local_ratio']):g}"
    geometry = cfg.get("local_geometry", "none")
    if geometry != "none":
        tag += f"-{geometry}-m{int(cfg.get('local_min_matches', 8))}-px{float(cfg.get('local_ransac_px', 4.0)):g}"
    if cfg.get("local_rootsift", False):
        tag += "-root"
    return tag


class DescriptorStore:
    """SIFT descriptors of every photo of the image cache, computed once and kept in
    WORK/cache/local-sift-<keypoints>.npz (descriptors, and each cache row's offset into them)."""

    def __init__(self, manifest: pd.DataFrame, descriptors: np.ndarray, offsets: np.ndarray, path=None,
                 points: np.ndarray | None = None):
        self.rows = pd.Series(manifest[C.ROW].to_numpy(), index=pd.MultiIndex.from_frame(manifest[[C.SPLIT, C.IMAGE]]))
        self.descriptors, self.offsets = descriptors, offsets
        self.points = points if points is not None else np.zeros((len(descriptors), 4), np.float32)
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
            # Files written before keypoints were kept are recomputed: geometry needs the points.
            if len(saved["offsets"]) == len(cache.images) + 1 and "points" in saved.files:
                return cls(cache.manifest, saved["descriptors"], saved["offsets"], path, saved["points"])
        parts = [sift_descriptors(cache.images[row], max_keypoints)
                 for row in track(range(len(cache.images)), len(cache.images), "local features", unit="photo")]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        descriptors = np.concatenate([np.asarray(p) for p in parts]) if parts else \
            np.zeros((0, DESCRIPTOR_DIM), dtype=np.uint8)
        points = np.concatenate([p.points for p in parts]) if parts else np.zeros((0, 4), np.float32)
        write_npz(path, descriptors=descriptors, offsets=offsets, points=points)
        return cls(cache.manifest, descriptors, offsets, path, points)

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
                part = slice(self.offsets[row], self.offsets[row + 1])
                self._arrays[row] = LocalFeatures(self.descriptors[part], self.points[part])
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

            self._saved = SavedMatches.beside(self.store.path, scorer_tag(self.cfg))
        return self._saved

    def rescore(self, table: pd.DataFrame, query_descriptors: list[np.ndarray], names, vectors: np.ndarray,
                queries: np.ndarray, gallery, raw: bool = False) -> pd.DataFrame:
        """Blends each query's `local_top` whales' scores with their best match count (module docstring),
        or, with knn.local_calibrate, fuses both as calibrated probabilities (decision/fusion_calibration.py).
        `raw`: leave the scores and give each row its count (`local_count`, -1 outside the shortlist),
        for the knn stage to fit that calibration on."""
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
        if cfg.get("local_calibrate"):
            from pipeline.decision.fusion_calibration import LOCAL_COUNT, FusionCalibration

            with_counts = table.assign(**{LOCAL_COUNT: count})
            if raw:
                return with_counts
            if not cfg.get("local_calibration"):
                raise PipelineError("knn.local_calibrate: these predictions hold no fitted calibration; re-run knn",
                                    "knn.local_calibration")
            return FusionCalibration.from_dict(cfg["local_calibration"]).apply(with_counts)
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
            counts = local_scores(query, self.store.get(todo, C.TRAIN), self.cfg)
            known.update({p: int(c) for p, c in zip(todo, counts)})
            if row is not None:
                self._saved_matches().add(row, [rows[p] for p in todo], counts)
        return [known[p] for p in photos]
