"""The new_whale decision, one object for every stage that makes it (knn, ensemble, cv, report,
submit, identify, the web page).

new_whale goes into a query's five just before the first whale whose score is below the threshold.
Strategies (config section `threshold`):
  cv     the threshold that maximises MAP@5 on out-of-fold scores (the middle of the best plateau);
  share  the threshold that puts new_whale first for `new_whale_share` of the queries it is set on:
         no labels, set on the very scores it will be applied to (test's expected share of unseen whales).

`fit` takes out-of-fold scores; `calibrate` takes the scores the policy will be applied to (for
`share`); `apply` turns a score table into five labels per query. The scores fitted on and applied to
must share a scale: knn and the ensemble make sure of it (each fold model searches the same gallery
for its validation and its test queries; see retrieval/retriever.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.registry import Registry
from pipeline.decision.threshold import map5_by_threshold, predict, share_threshold, top_whales, tune_threshold

# threshold.strategy: name -> where the threshold comes from.
STRATEGIES = Registry("threshold strategy", "threshold.strategy")


@STRATEGIES.register("cv")
class TunedOutOfFold:
    """The threshold that maximises MAP@5 on out-of-fold scores, set by `fit`."""
    calibrates = False

    def fitted(self, tuned: float, current: float | None) -> float | None:
        return tuned

    def unfitted(self, vals: np.ndarray, share: float) -> float:
        raise PipelineError("the new_whale policy was never fitted", "threshold")


@STRATEGIES.register("share")
class ShareOfQueries:
    """New_whale first for `share` of the queries, set on the scores it is applied to (`calibrate`)."""
    calibrates = True

    def fitted(self, tuned: float, current: float | None) -> float | None:
        return current

    def unfitted(self, vals: np.ndarray, share: float) -> float:
        return share_threshold(vals, share)


@dataclass
class NewWhalePolicy:
    strategy: str = "cv"
    share: float = 0.28
    grid: int = 201
    threshold: float | None = None
    fitted: dict = field(default_factory=dict)  # what it was fitted on: queries, folds, in-sample MAP@5, curve

    @classmethod
    def from_config(cls, cfg: dict) -> "NewWhalePolicy":
        t = cfg["threshold"]
        STRATEGIES.get(t["strategy"])  # an unknown strategy is refused here
        return cls(strategy=t["strategy"], share=float(t["new_whale_share"]), grid=int(t["grid"]))

    # ------------------------------------------------------------------------------------ fitting

    def fit(self, scores: pd.DataFrame, queries: pd.DataFrame) -> "NewWhalePolicy":
        """Out-of-fold score table (Image, Id, score) and its queries (Image, truth[, fold]). Strategy cv
        sets the threshold; both record the in-sample MAP@5 curve."""
        ids, vals = top_whales(scores, queries[C.IMAGE])
        threshold, in_sample, curve = tune_threshold(ids, vals, queries[C.TRUTH], self.grid)
        fitted = {"queries": int(len(queries)), "map5_in_sample": float(in_sample),
                  "curve": curve.round(6).to_dict(orient="list")}
        if C.FOLD in queries.columns:
            fitted["folds"] = sorted(int(f) for f in queries[C.FOLD].unique())
        return NewWhalePolicy(self.strategy, self.share, self.grid,
                              STRATEGIES.get(self.strategy)().fitted(threshold, self.threshold), fitted)

    def calibrate(self, scores: pd.DataFrame, names) -> "NewWhalePolicy":
        """Strategy share: set the threshold on the scores it will be applied to (no labels)."""
        rule = STRATEGIES.get(self.strategy)()
        if not rule.calibrates:
            return self
        _, vals = top_whales(scores, names)
        return NewWhalePolicy(self.strategy, self.share, self.grid, rule.unfitted(vals, self.share), self.fitted)

    # ----------------------------------------------------------------------------------- applying

    def threshold_for(self, vals: np.ndarray) -> float:
        if self.threshold is not None:
            return self.threshold
        return STRATEGIES.get(self.strategy)().unfitted(vals, self.share)

    def labels(self, scores: pd.DataFrame, names, fallback: list[str]) -> list[list[str]]:
        """Five distinct labels per query, best first, new_whale inserted at the threshold."""
        ids, vals = top_whales(scores, names)
        return predict(ids, vals, self.threshold_for(vals), fallback)

    def map5(self, scores: pd.DataFrame, queries: pd.DataFrame) -> float:
        ids, vals = top_whales(scores, queries[C.IMAGE])
        return float(map5_by_threshold(ids, vals, queries[C.TRUTH], [self.threshold_for(vals)])[0])

    # ---------------------------------------------------------------------------------- on disk

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "new_whale_share": self.share, "grid": self.grid,
                "threshold": self.threshold, **self.fitted}

    @classmethod
    def from_dict(cls, data: dict) -> "NewWhalePolicy":
        known = {"strategy", "new_whale_share", "grid", "threshold"}
        return cls(data.get("strategy", "cv"), float(data.get("new_whale_share", 0.28)), int(data.get("grid", 201)),
                   None if data.get("threshold") is None else float(data["threshold"]),
                   {k: v for k, v in data.items() if k not in known})
