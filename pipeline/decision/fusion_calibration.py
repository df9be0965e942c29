"""Calibrated fusion of global and local evidence (WildFusion's way, Cermak et al. 2024): each
matcher's score becomes P(same individual) by isotonic regression on out-of-fold pairs, the pairs the
retriever meets (each validation photo against its shortlisted whales: right or wrong), and the fused
score is (1 - w) * P_global(score) + w * P_local(count): one probability scale that the new_whale
policy then reads. A whale outside the local shortlist was not matched: it takes P_local(0).

The knn stage fits it per fold on the other folds' pairs (so no fold's validation photos reach the
calibration that scores them), and once on every fold's pairs for test photos and identify."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError

LOCAL_COUNT = "local_count"  # a shortlisted whale's local score (-1: not shortlisted)


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
    return np.asarray(model.X_thresholds_, np.float64), np.asarray(model.y_thresholds_, np.float64)


@dataclass
class FusionCalibration:
    global_x: np.ndarray
    global_p: np.ndarray
    local_x: np.ndarray
    local_p: np.ndarray
    weight: float
    pairs: int = 0

    @classmethod
    def fit(cls, raw: pd.DataFrame, truth: pd.Series, weight: float) -> "FusionCalibration":
        """`raw`: out-of-fold rows Image, Id, score (global), local_count; `truth`: Image -> true label."""
        right = (raw[C.ID].to_numpy() == truth.reindex(raw[C.IMAGE]).to_numpy()).astype(np.float64)
        if right.min() == right.max():
            raise PipelineError("calibrated fusion needs out-of-fold pairs both right and wrong", "knn.local_calibrate")
        gx, gp = _isotonic(raw[C.SCORE].to_numpy(np.float64), right)
        shortlisted = raw[LOCAL_COUNT].to_numpy() >= 0
        if right[shortlisted].min() == right[shortlisted].max():
            raise PipelineError("calibrated fusion needs shortlisted pairs both right and wrong", "knn.local_calibrate")
        lx, lp = _isotonic(raw.loc[shortlisted, LOCAL_COUNT].to_numpy(np.float64), right[shortlisted])
        return cls(gx, gp, lx, lp, float(weight), int(len(raw)))

    def p_global(self, score) -> np.ndarray:
        return np.interp(np.asarray(score, np.float64), self.global_x, self.global_p)

    def p_local(self, count) -> np.ndarray:
        return np.interp(np.maximum(np.asarray(count, np.float64), 0), self.local_x, self.local_p)

    def apply(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Image, Id, score on the fused probability scale, best first per query."""
        fused = (1 - self.weight) * self.p_global(raw[C.SCORE]) + self.weight * self.p_local(raw[LOCAL_COUNT])
        out = raw.drop(columns=[LOCAL_COUNT]).assign(**{C.SCORE: fused.astype(np.float32)})
        return out.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"global_x": self.global_x.round(6).tolist(), "global_p": self.global_p.round(6).tolist(),
                "local_x": self.local_x.tolist(), "local_p": self.local_p.round(6).tolist(),
                "weight": self.weight, "pairs": self.pairs}

    @classmethod
    def from_dict(cls, d: dict) -> "FusionCalibration":
        return cls(np.asarray(d["global_x"], np.float64), np.asarray(d["global_p"], np.float64),
                   np.asarray(d["local_x"], np.float64), np.asarray(d["local_p"], np.float64), float(d["weight"]),
                   int(d.get("pairs", 0)))


def cross_fitted(raw_by_fold: dict[int, pd.DataFrame], truth: pd.Series, weight: float) -> dict[int, pd.DataFrame]:
    """Each fold's out-of-fold rows fused by a calibration fitted on the other folds' rows only."""
    if len(raw_by_fold) < 2:
        raise PipelineError("calibrated fusion fits on the other folds: it needs at least two folds",
                            "knn.local_calibrate")
    out = {}
    for fold, raw in raw_by_fold.items():
        others = pd.concat([r for f, r in raw_by_fold.items() if f != fold], ignore_index=True)
        out[fold] = FusionCalibration.fit(others, truth, weight).apply(raw)
    return out
