"""Local features, step 4 of 4: turning each shortlisted candidate's count into its new score, on the
one scale the new_whale policy reads.

    blend       (1 - local_weight) * score + local_weight * count / (count + local_scale); a whale
                outside the shortlist (count -1) keeps (1 - local_weight) * score
    calibrated  both as calibrated probabilities, P(same individual) (decision/fusion_calibration.py),
                fitted by the knn stage on out-of-fold rows (knn.local_calibrate)"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError


def with_counts(table: pd.DataFrame, count: np.ndarray) -> pd.DataFrame:
    """The table with each row's count beside its score (for the knn stage to fit a calibration on)."""
    from pipeline.decision.fusion_calibration import LOCAL_COUNT

    return table.assign(**{LOCAL_COUNT: count})


def calibrated(table: pd.DataFrame, count: np.ndarray, calibration: dict | None) -> pd.DataFrame:
    from pipeline.decision.fusion_calibration import FusionCalibration

    if not calibration:
        raise PipelineError("knn.local_calibrate: these predictions hold no fitted calibration; re-run knn",
                            "knn.local_calibration")
    return FusionCalibration.from_dict(calibration).apply(with_counts(table, count))


def blend(table: pd.DataFrame, count: np.ndarray, weight: float, scale: float) -> pd.DataFrame:
    local = np.where(count >= 0, np.maximum(count, 0) / (np.maximum(count, 0) + scale), 0.0)
    out = table.assign(**{C.SCORE: ((1 - weight) * table[C.SCORE].to_numpy() + weight * local).astype(np.float32)})
    return out.sort_values([C.IMAGE, C.SCORE], ascending=[True, False], kind="stable").reset_index(drop=True)
