"""P(new individual): the probability that a query's individual is not in the gallery, from the score
the new_whale policy reads (the query's best whale score), by isotonic regression on out-of-fold
queries (truth new_whale or not). Isotonic, not Platt: the only assumption is that a higher best score
never makes "new" more likely. Wildbook, HotSpotter and wildlife-tools give unbounded scores; this is
a probability a reviewer can read ("P = 0.8": about 8 in 10 such photos are new animals)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.decision.threshold import top_whales


@dataclass
class NewIndividualCalibration:
    scores: np.ndarray  # increasing best-whale scores (the isotonic fit's breakpoints)
    p_new: np.ndarray  # P(new individual) at each, non-increasing
    fitted_on: int = 0  # out-of-fold queries
    base_rate: float = 0.0  # their share of new individuals

    @classmethod
    def fit(cls, best_scores: np.ndarray, is_new: np.ndarray) -> "NewIndividualCalibration":
        from sklearn.isotonic import IsotonicRegression

        best_scores = np.asarray(best_scores, dtype=np.float64)
        is_new = np.asarray(is_new, dtype=np.float64)
        if len(best_scores) < 2 or is_new.min() == is_new.max():
            raise PipelineError("P(new individual) needs out-of-fold queries of both kinds (known and new)",
                                "out-of-fold predictions")
        best_scores = np.where(np.isfinite(best_scores), best_scores, best_scores[np.isfinite(best_scores)].min())
        model = IsotonicRegression(increasing=False, out_of_bounds="clip", y_min=0.0, y_max=1.0)
        model.fit(best_scores, is_new)
        return cls(np.asarray(model.X_thresholds_, dtype=np.float64), np.asarray(model.y_thresholds_, dtype=np.float64),
                   int(len(best_scores)), float(is_new.mean()))

    @classmethod
    def from_predictions(cls, oof: pd.DataFrame, queries: pd.DataFrame) -> "NewIndividualCalibration":
        """Fitted on an out-of-fold score table and its queries (Image, truth)."""
        _, vals = top_whales(oof, queries[C.IMAGE])
        return cls.fit(vals[:, 0], (queries[C.TRUTH] == C.NEW_WHALE).to_numpy())

    def __call__(self, best_scores) -> np.ndarray:
        best = np.asarray(best_scores, dtype=np.float64)
        best = np.where(np.isfinite(best), best, -1e9)  # no candidate at all: as new as it gets
        return np.interp(best, self.scores, self.p_new)

    def to_dict(self) -> dict:
        return {"scores": self.scores.round(6).tolist(), "p_new": self.p_new.round(6).tolist(),
                "fitted_on": self.fitted_on, "base_rate": round(self.base_rate, 6)}

    @classmethod
    def from_dict(cls, data: dict) -> "NewIndividualCalibration":
        return cls(np.asarray(data["scores"], dtype=np.float64), np.asarray(data["p_new"], dtype=np.float64),
                   int(data.get("fitted_on", 0)), float(data.get("base_rate", 0.0)))


def reliability(p: np.ndarray, is_new: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Deciles of P (by rank): their mean P against the share that were new."""
    p, is_new = np.asarray(p, dtype=np.float64), np.asarray(is_new, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, max(1, len(p)))):
        if len(part):
            rows.append({"photos": int(len(part)), "mean_p_new": float(p[part].mean()),
                         "share_new": float(is_new[part].mean())})
    return pd.DataFrame(rows)


def auc(p: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of scores p for the positives (ties count half); NaN without both kinds."""
    p, positive = np.asarray(p, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
