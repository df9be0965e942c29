"""Geometric verification of local-feature matches, as the field does it: HotSpotter checks its matches
with a homography and counts inliers; wildlife-tools' CollectCountsRansac counts the inliers of a
fundamental matrix. Both here go through OpenCV's USAC MAGSAC++ (cv2.USAC_MAGSAC), which needs no
hand-set inlier threshold beyond an upper bound (`pixels`)."""
from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError

MIN_POINTS = {"homography": 4, "fundamental": 8}


def ransac_inliers(source: np.ndarray, target: np.ndarray, geometry: str = "homography",
                   pixels: float = 4.0) -> np.ndarray:
    """Boolean mask of the point pairs (source[i] -> target[i], N x 2 pixels) that one robustly
    estimated transform explains; all False when too few pairs or the estimate fails."""
    import cv2

    source = np.ascontiguousarray(source, dtype=np.float32).reshape(-1, 2)
    target = np.ascontiguousarray(target, dtype=np.float32).reshape(-1, 2)
    if geometry not in MIN_POINTS:
        raise PipelineError(f"unknown geometry {geometry!r}; use {' or '.join(MIN_POINTS)}", "knn.local_geometry")
    none = np.zeros(len(source), dtype=bool)
    if len(source) < MIN_POINTS[geometry]:
        return none
    try:
        if geometry == "homography":
            model, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, float(pixels), maxIters=2000,
                                             confidence=0.999)
        else:
            model, mask = cv2.findFundamentalMat(source, target, cv2.USAC_MAGSAC, float(pixels), 0.999, 2000)
    except cv2.error:  # degenerate configurations (all points on a line, duplicates)
        return none
    if model is None or mask is None:
        return none
    return mask.ravel().astype(bool)[:len(source)]


def inlier_matches(query_rgb: np.ndarray, gallery_rgb: np.ndarray, keypoints: int = 500, ratio: float = 0.8,
                   geometry: str = "homography", pixels: float = 4.0):
    """The verified SIFT matches between two photos, for drawing: (query_xy N x 2, gallery_xy N x 2, in
    each photo's own pixels, and strength N in [0, 1]: 1 - d1/d2 of the ratio test, rescaled so the
    weakest match that passes is 0). Lowe's ratio on distances (not squared), as OpenCV users set it."""
    from pipeline.retrieval.local_features import _nearest_two, sift_descriptors

    query, gallery = sift_descriptors(query_rgb, keypoints), sift_descriptors(gallery_rgb, keypoints)
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    if len(query) < 2 or len(gallery) < 2:
        return empty
    two, nearest, _ = _nearest_two(query, [gallery])
    distance_ratio = np.sqrt(two[:, 0] / np.maximum(two[:, 1], 1e-12))
    rows = np.nonzero(distance_ratio < ratio)[0]
    if len(rows) == 0:
        return empty
    # One gallery match per query keypoint: its strongest.
    order = rows[np.lexsort((distance_ratio[rows], nearest[rows]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = nearest[order][1:] != nearest[order][:-1]
    rows = order[first]
    g_xy, q_xy = gallery.points[rows, :2], query.points[nearest[rows], :2]
    keep = ransac_inliers(g_xy, q_xy, geometry, pixels)
    strength = np.clip(1 - distance_ratio[rows] / ratio, 0, 1).astype(np.float32)
    return q_xy[keep], g_xy[keep], strength[keep]
