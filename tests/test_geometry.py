"""Geometric verification (retrieval/local/collect.py: ransac_inliers, inlier_counts): the inliers of a
photo against its own warp by a known homography are the warped keypoints; an unrelated photo has
next to none; the robust estimate separates exact point pairs from outliers."""
import numpy as np
import pytest

from pipeline.retrieval.local.collect import inlier_counts, inlier_matches, local_scores, match_counts, ransac_inliers
from pipeline.retrieval.local.extract import sift_descriptors

H = np.array([[0.92, -0.12, 14.0], [0.10, 0.95, 6.0], [0.0002, 0.0001, 1.0]])


def textured(seed, size=(120, 200)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(size[0] // 6, size[1] // 6, 3), dtype=np.uint8)
    img = np.kron(small, np.ones((6, 6, 1), dtype=np.uint8))
    out = np.zeros((*size, 3), np.uint8)
    out[:img.shape[0], :img.shape[1]] = img
    return out


def warp(image, h=H):
    import cv2

    return cv2.warpPerspective(image, h, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)


def apply(h, xy):
    ones = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ h.T
    return ones[:, :2] / ones[:, 2:]


def test_ransac_keeps_the_pairs_one_homography_explains():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 200, size=(40, 2))
    target = apply(H, source)
    target[30:] = rng.uniform(0, 200, size=(10, 2))  # ten outliers
    mask = ransac_inliers(source, target, "homography", 2.0)
    assert mask[:30].all() and mask[30:].sum() <= 1
    assert not ransac_inliers(source[:3], target[:3], "homography").any()  # too few pairs: none
    assert ransac_inliers(source, target, "fundamental", 2.0)[:30].mean() > 0.9
    with pytest.raises(Exception, match="unknown geometry"):
        ransac_inliers(source, target, "affine")


def test_inliers_of_a_photo_against_its_warp_are_the_warped_keypoints():
    photo = textured(1)
    warped = warp(photo)
    q_xy, g_xy, strength = inlier_matches(warped, photo, keypoints=300)
    assert len(q_xy) >= 20
    error = np.linalg.norm(apply(H, g_xy) - q_xy, axis=1)  # each inlier: the photo's keypoint, warped
    assert np.median(error) < 1.5 and (error < 4.5).mean() > 0.95
    assert strength.min() >= 0 and strength.max() <= 1
    q_xy, _, _ = inlier_matches(warped, textured(2), keypoints=300)
    assert len(q_xy) <= 4


def test_inlier_counts_separate_the_same_pattern_from_texture_alike():
    photo, other = textured(3), textured(4)
    query = sift_descriptors(warp(photo), 300)
    gallery = [sift_descriptors(photo, 300), sift_descriptors(other, 300)]
    same, unrelated = inlier_counts(query, gallery, 0.5, "homography", 8, 4.0)
    assert same >= 20 and unrelated <= 0.05 * same
    # Verified inliers are a subset of the ratio-test matches they were estimated from.
    counted = match_counts(query, gallery, 0.5)
    assert same <= counted[0]
    loose, loose_unrelated = inlier_counts(query, gallery, 0.8, "homography", 8, 4.0)
    assert loose_unrelated < match_counts(query, gallery, 0.8)[1]  # geometry removes chance matches
    cfg = {"local_ratio": 0.5, "local_geometry": "fundamental", "local_min_matches": 8, "local_ransac_px": 4.0,
           "local_rootsift": True}
    same, unrelated = local_scores(query, gallery, cfg)
    assert same >= 15 and unrelated <= 0.1 * same


def test_keypoints_travel_with_the_descriptors():
    features = sift_descriptors(textured(5), 100)
    assert features.points.shape == (len(features), 4)
    assert (features.points[:, 0] >= 0).all() and (features.points[:, 0] < 200).all()
    assert (features.points[:, 1] >= 0).all() and (features.points[:, 1] < 120).all()
