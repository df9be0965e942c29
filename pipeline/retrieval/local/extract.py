"""Local features, step 1 of 4 (as wildlife-tools splits local matching: extract, match, collect,
calibrate): SIFT descriptors with their keypoints, for one photo or every photo of the image cache
(computed once per work folder and stored beside the cache)."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
