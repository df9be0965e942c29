"""Prediction sets on disk: out-of-fold and test score tables plus the tuned new_whale threshold.

    <WORK>/predictions/<name>/oof.parquet     Image, Id, score, fold   (validation queries, per fold)
    <WORK>/predictions/<name>/test.parquet    Image, Id, score          (fused over fold models)
    <WORK>/predictions/<name>/threshold.json  the tuned threshold, its out-of-fold MAP@5, the curve
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_json, write_parquet
from pipeline.retrieval.threshold import share_threshold, top_whales, tune_threshold


@dataclass
class Predictions:
    oof: pd.DataFrame
    test: pd.DataFrame
    threshold: dict

    @classmethod
    def read(cls, folder: Path) -> "Predictions":
        import json

        paths = [folder / "oof.parquet", folder / "test.parquet", folder / "threshold.json"]
        for path in paths:
            if not path.is_file():
                raise PipelineError("predictions not found; run the knn (or ensemble) stage first", path)
        return cls(pd.read_parquet(paths[0]), pd.read_parquet(paths[1]), json.loads(paths[2].read_text()))


def tune_on_oof(oof: pd.DataFrame, folds: pd.DataFrame, grid: int) -> dict:
    queries = folds[folds[C.FOLD].isin(oof[C.FOLD].unique())]
    ids, vals = top_whales(oof, queries[C.IMAGE])
    threshold, score, curve = tune_threshold(ids, vals, queries[C.TRUTH], grid)
    return {"threshold": threshold, "oof_map5_in_sample": score, "folds": sorted(int(f) for f in oof[C.FOLD].unique()),
            "queries": int(len(queries)), "curve": curve.round(6).to_dict(orient="list"), "strategy": "cv"}


def write_predictions(folder: Path, oof: pd.DataFrame, test: pd.DataFrame, folds: pd.DataFrame, grid: int,
                      threshold_cfg: dict | None = None) -> dict:
    """Writes the tables and the new_whale threshold: tuned on the out-of-fold queries (strategy cv), or
    set on test so that new_whale comes first for threshold_cfg['new_whale_share'] of it (strategy share)."""
    threshold = tune_on_oof(oof, folds, grid)
    if threshold_cfg and threshold_cfg.get("strategy", "cv") == "share":
        names = test[C.IMAGE].unique()
        _, vals = top_whales(test, names)
        threshold.update(threshold=share_threshold(vals, threshold_cfg["new_whale_share"]), strategy="share",
                         new_whale_share=float(threshold_cfg["new_whale_share"]))
    elif threshold_cfg and threshold_cfg.get("strategy", "cv") != "cv":
        raise PipelineError(f"unknown threshold strategy {threshold_cfg['strategy']!r}; use cv or share",
                            "threshold.strategy")
    write_parquet(folder / "oof.parquet", oof)
    write_parquet(folder / "test.parquet", test)
    write_json(folder / "threshold.json", threshold)
    return threshold


def fallback_whales(folds: pd.DataFrame, n: int = C.SUBMISSION_LABELS) -> list[str]:
    """The most photographed known whales, to pad a ranking with fewer than five candidates."""
    known = folds.loc[folds[C.ID] != C.NEW_WHALE, C.ID]
    return known.value_counts().index[:n].tolist()
