"""Local features, step 3 of 4: collecting one score per pair of photos from their matches
(wildlife-tools' CollectCounts and CollectCountsRansac): the ratio-test count, or the matches one
robustly estimated transform explains (HotSpotter checks its matches with a homography; wildlife-tools
counts the inliers of a fundamental matrix; both here through OpenCV's USAC MAGSAC++, which needs no
hand-set inlier threshold beyond an upper bound, `pixels`). Also the matches themselves, for drawing:
`scored_matches` gives exactly those a score counted, with the settings that scored it."""
from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError
from pipeline.retrieval.local.extract import LocalFeatures
from pipeline.retrieval.local.match import GEOMETRIES, MatchSettings, nearest_two, one_per_query_keypoint


def match_counts(query: np.ndarray, gallery: list[np.ndarray], ratio: float, rootsift: bool = False) -> np.ndarray:
    """For each gallery photo: how many of its descriptors have two nearest query descriptors whose
    squared distances pass d1 / d2 < ratio."""
    counts = np.zeros(len(gallery), dtype=np.int64)
    if len(query) < 2 or not gallery or sum(len(g) for g in gallery) == 0:
        return counts
    two, _, owner = nearest_two(query, gallery, rootsift)
    np.add.at(counts, owner, two[:, 0] < ratio * two[:, 1])
    return counts


def inlier_counts(query: LocalFeatures, gallery: list[LocalFeatures], ratio: float, geometry: str = "homography",
                  min_matches: int = 8, pixels: float = 4.0, rootsift: bool = False) -> np.ndarray:
    """For each gallery photo: the number of its ratio-test matches that agree with one geometric
    transform, estimated robustly by OpenCV's USAC MAGSAC++ (a homography: a flat, rigid pattern such
    as a fluke seen from another angle; a fundamental matrix: any rigid scene, HotSpotter's and
    wildlife-tools' CollectCountsRansac choice). Each query keypoint is used once (its best match); a
    photo with fewer than `min_matches` matches, or whose estimate fails, scores 0."""
    counts = np.zeros(len(gallery), dtype=np.int64)
    if len(query) < 2 or not gallery or sum(len(g) for g in gallery) == 0:
        return counts
    two, nearest, owner = nearest_two(query, gallery, rootsift)
    passed = two[:, 0] < ratio * two[:, 1]
    starts = np.concatenate([[0], np.cumsum([len(g) for g in gallery])])
    for p, photo in enumerate(gallery):
        rows = np.nonzero(passed[starts[p]:starts[p + 1]])[0]
        if len(rows) < min_matches:
            continue
        strength = two[starts[p] + rows, 0] / np.maximum(two[starts[p] + rows, 1], 1e-12)
        q_index = nearest[starts[p] + rows]
        keep = one_per_query_keypoint(strength, q_index)  # per query keypoint, its best gallery match
        if len(keep) < min_matches:
            continue
        counts[p] = ransac_inliers(photo.points[rows[keep], :2], query.points[q_index[keep], :2], geometry, pixels).sum()
    return counts


def local_scores(query, gallery, cfg: dict | MatchSettings) -> np.ndarray:
    """The configured local score of each gallery photo against the query: ratio-test counts
    (knn.local_geometry none) or geometrically verified inliers."""
    s = cfg if isinstance(cfg, MatchSettings) else MatchSettings.from_knn(cfg)
    return GEOMETRIES.get(s.geometry)(query, gallery, s)


@GEOMETRIES.register("none")
def counted(query, gallery, s: MatchSettings) -> np.ndarray:
    return match_counts(query, gallery, s.ratio, s.rootsift)


@GEOMETRIES.register("homography")
@GEOMETRIES.register("fundamental")
def verified(query, gallery, s: MatchSettings) -> np.ndarray:
    return inlier_counts(query, gallery, s.ratio, s.geometry, s.min_matches, s.pixels, s.rootsift)


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
    from pipeline.retrieval.local.extract import sift_descriptors

    query, gallery = sift_descriptors(query_rgb, keypoints), sift_descriptors(gallery_rgb, keypoints)
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    if len(query) < 2 or len(gallery) < 2:
        return empty
    two, nearest, _ = nearest_two(query, [gallery])
    distance_ratio = np.sqrt(two[:, 0] / np.maximum(two[:, 1], 1e-12))
    rows = np.nonzero(distance_ratio < ratio)[0]
    if len(rows) == 0:
        return empty
    rows = rows[one_per_query_keypoint(distance_ratio[rows], nearest[rows])]  # one per query keypoint: its strongest
    g_xy, q_xy = gallery.points[rows, :2], query.points[nearest[rows], :2]
    keep = ransac_inliers(g_xy, q_xy, geometry, pixels)
    strength = np.clip(1 - distance_ratio[rows] / ratio, 0, 1).astype(np.float32)
    return q_xy[keep], g_xy[keep], strength[keep]


def scored_matches(query: LocalFeatures, gallery: LocalFeatures, settings: MatchSettings):
    """The matches a pair's score counted, for drawing: (query_xy N x 2, gallery_xy N x 2, strength N in
    [0, 1]: 1 - d1/d2 of the squared-distance ratio test, rescaled so the weakest match that passes is 0).
    The same steps as match_counts / inlier_counts with the same settings: ratio-test matches (geometry
    none), or the RANSAC inliers among each query keypoint's best match (none below min_matches)."""
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    if len(query) < 2 or len(gallery) == 0:
        return empty
    two, nearest, _ = nearest_two(query, [gallery], settings.rootsift)
    ratio = two[:, 0] / np.maximum(two[:, 1], 1e-12)
    rows = np.nonzero(two[:, 0] < settings.ratio * two[:, 1])[0]
    if settings.geometry != "none":
        if len(rows) < settings.min_matches:
            return empty
        rows = rows[one_per_query_keypoint(ratio[rows], nearest[rows])]
        if len(rows) < settings.min_matches:
            return empty
    g_xy, q_xy = gallery.points[rows, :2], query.points[nearest[rows], :2]
    strength = np.clip(1 - ratio[rows] / settings.ratio, 0, 1).astype(np.float32)
    if settings.geometry == "none":
        return q_xy, g_xy, strength
    keep = ransac_inliers(g_xy, q_xy, settings.geometry, settings.pixels)
    return q_xy[keep], g_xy[keep], strength[keep]
