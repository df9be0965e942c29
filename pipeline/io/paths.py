"""Where each stage's outputs live under WORK, and the default folds file of a work folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def model_dir(work, name: str, fold: int) -> Path:
    return Path(work) / "models" / name / f"fold{fold}"


def embedding_dir(work, name: str, fold: int) -> Path:
    return Path(work) / "embeddings" / name / f"fold{fold}"


def prediction_dir(work, name: str) -> Path:
    return Path(work) / "predictions" / name


def folds_with(root: Path, filename: str) -> list[int]:
    """Fold numbers k for which root/fold<k>/<filename> exists (trained models, written embeddings)."""
    return sorted(int(p.parent.name[4:]) for p in Path(root).glob(f"fold*/{filename}"))


def embedded_models(work) -> list[str]:
    """Every model with embeddings in WORK."""
    root = Path(work) / "embeddings"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def default_folds_file(work, folds_dir: str | Path = "folds") -> Path:
    """folds/<data set>-<hash of its path>.csv for the data set cached in WORK: two data sets in one
    checkout never share a folds file. Before preprocess has run, folds/<work folder name>.csv."""
    report = Path(work) / "cache" / "preprocess.json"
    if report.is_file():
        data = Path(json.loads(report.read_text())["data"]).resolve()
        digest = hashlib.sha1(str(data).encode()).hexdigest()[:8]
        return Path(folds_dir) / f"{data.name}-{digest}.csv"
    return Path(folds_dir) / f"{Path(work).resolve().name}.csv"
