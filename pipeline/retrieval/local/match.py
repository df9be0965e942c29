"""Local features, step 2 of 4: matching a pair of photos' descriptors. Every descriptor of the gallery
photo is paired with its two nearest query descriptors (squared L2 distances); Lowe's ratio test on
those two decides whether the pair is a match (wildlife-tools' MatchDescriptors). The settings that
score a pair (`MatchSettings`, from knn.local_*) are one object, so the page that draws a pair's matches
uses exactly the settings that scored it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.registry import Registry

# knn.local_geometry, registered by collect.py: none, the ratio-test count; homography or fundamental,
# the inliers of one transform.
GEOMETRIES = Registry("local geometry", "knn.local_geometry")


@dataclass(frozen=True)
class MatchSettings:
    """How a pair of photos is matched and scored (knn.local_*)."""
    ratio: float = 0.5  # Lowe's ratio on squared distances
    geometry: str = "none"  # none: ratio-test counts; homography / fundamental: RANSAC inliers
    min_matches: int = 8  # a pair with fewer matches scores 0 (with a geometry)
    pixels: float = 4.0  # RANSAC's bound on an inlier's reprojection error
    rootsift: bool = False
    keypoints: int = 500  # SIFT keypoints per photo

    @classmethod
    def from_knn(cls, cfg: dict) -> "MatchSettings":
        geometry = cfg.get("local_geometry", "none")  # collect.py refuses an unknown one when it scores
        return cls(float(cfg["local_ratio"]), geometry, int(cfg.get("local_min_matches", 8)),
                   float(cfg.get("local_ransac_px", 4.0)), bool(cfg.get("local_rootsift", False)),
                   int(cfg.get("local_keypoints", 500)))

    def tag(self) -> str:
        """What a saved count depends on besides the descriptors (saved.py names its file by it)."""
        tag = f"-r{self.ratio:g}"
        if self.geometry != "none":
            tag += f"-{self.geometry}-m{self.min_matches}-px{self.pixels:g}"
        if self.rootsift:
            tag += "-root"
        return tag

    def describe(self) -> str:
        """For a reader (the review page): what scored the pair."""
        what = "ratio-test matches" if self.geometry == "none" else \
            f"{self.geometry} RANSAC inliers (at least {self.min_matches} matches, {self.pixels:g} px)"
        return f"SIFT {self.keypoints} keypoints{', RootSIFT' if self.rootsift else ''}, ratio {self.ratio:g} " \
               f"on squared distances, {what}"


def as_float(descriptors: np.ndarray, rootsift: bool) -> np.ndarray:
    """float32 descriptors; RootSIFT (Arandjelovic & Zisserman 2012): L1-normalised, then square-rooted,
    so that Euclidean distance between them is the Hellinger distance between the originals."""
    x = np.asarray(descriptors, dtype=np.float32)
    if rootsift:
        x = np.sqrt(x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12))
    return x


def nearest_two(query: np.ndarray, gallery: list[np.ndarray], rootsift: bool = False):
    """For every gallery descriptor (all photos stacked): its two smallest squared distances to the
    query's descriptors and the index of the nearest; and the photo each stacked row belongs to."""
    sizes = np.array([len(g) for g in gallery])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the distance matrices are the whole cost
    g = torch.from_numpy(as_float(np.concatenate([np.asarray(x) for x in gallery]), rootsift)).to(device)
    q = torch.from_numpy(as_float(np.asarray(query), rootsift)).to(device)
    two = torch.cdist(g, q).pow(2).topk(2, dim=1, largest=False)
    return two.values.cpu().numpy(), two.indices[:, 0].cpu().numpy(), np.repeat(np.arange(len(gallery)), sizes)


def one_per_query_keypoint(strength: np.ndarray, q_index: np.ndarray) -> np.ndarray:
    """Positions of the matches to keep when each query keypoint may be used once: its best match
    (lowest `strength`, a ratio)."""
    order = np.lexsort((strength, q_index))
    first = np.ones(len(order), dtype=bool)
    first[1:] = q_index[order][1:] != q_index[order][:-1]
    return order[first]
