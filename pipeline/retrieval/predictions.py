"""Prediction sets on disk: out-of-fold and test score tables, the fitted new_whale policy, and the
resolved config that produced them.

    <WORK>/predictions/<name>/oof.parquet     Image, Id, score, fold   (validation queries, per fold)
    <WORK>/predictions/<name>/test.parquet    Image, Id, score          (fused over fold models)
    <WORK>/predictions/<name>/threshold.json  the NewWhalePolicy: strategy, threshold, what it was fitted on
    <WORK>/predictions/<name>/config.yaml     the config of the run
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_json, write_parquet, write_yaml
from pipeline.io.paths import prediction_dir
from pipeline.decision.policy import NewWhalePolicy


@dataclass
class Predictions:
    oof: pd.DataFrame
    test: pd.DataFrame
    policy: NewWhalePolicy

    @property
    def threshold(self) -> dict:
        return self.policy.to_dict()

    @classmethod
    def read(cls, folder: Path) -> "Predictions":
        paths = [folder / "oof.parquet", folder / "test.parquet", folder / "threshold.json"]
        for path in paths:
            if not path.is_file():
                raise PipelineError("predictions not found; run the knn (or ensemble) stage first", path)
        return cls(pd.read_parquet(paths[0]), pd.read_parquet(paths[1]),
                   NewWhalePolicy.from_dict(json.loads(paths[2].read_text())))


def write_predictions(folder: Path, oof: pd.DataFrame, test: pd.DataFrame, folds: pd.DataFrame, cfg: dict,
                      folds_file: str | Path) -> NewWhalePolicy:
    """Writes the tables, the new_whale policy (fitted on the out-of-fold queries; for strategy share,
    calibrated on test) and the config; returns the policy. The folds file is recorded: it defines
    each fold model's gallery, which identify must search like knn did."""
    queries = folds[folds[C.FOLD].isin(oof[C.FOLD].unique())]
    policy = NewWhalePolicy.from_config(cfg).fit(oof, queries).calibrate(test, test[C.IMAGE].unique())
    policy.fitted["folds_file"] = str(Path(folds_file).resolve())
    write_parquet(folder / "oof.parquet", oof)
    write_parquet(folder / "test.parquet", test)
    write_json(folder / "threshold.json", policy.to_dict())
    write_yaml(folder / "config.yaml", cfg)
    return policy


def fallback_whales(folds: pd.DataFrame, n: int = C.SUBMISSION_LABELS) -> list[str]:
    """The most photographed known whales, to pad a ranking with fewer than five candidates."""
    known = folds.loc[folds[C.ID] != C.NEW_WHALE, C.ID]
    return known.value_counts().index[:n].tolist()


def prediction_set(work, models: list[str]) -> tuple[Path, list[float]]:
    """The prediction folder whose scale and policy identify reproduces, and the models' weights:
    one model's own predictions, or the ensemble's fusion of several (members.csv names them)."""
    if len(models) == 1:
        return prediction_dir(work, models[0]), [1.0]
    folder = prediction_dir(work, "ensemble_fusion")
    members = folder / "members.csv"
    if not members.is_file():
        raise PipelineError("several models are identified as the ensemble fuses them; run the ensemble stage "
                            "with fusion among ensemble.methods first", members)
    table = pd.read_csv(members)
    if sorted(table["name"]) != sorted(models):
        raise PipelineError(f"the ensemble fused {sorted(table['name'])}, not {sorted(models)}; name those "
                            "models, or re-run the ensemble stage", members)
    weight = dict(zip(table["name"], table["weight"]))
    return folder, [float(weight[m]) for m in models]
