"""Where each stage's outputs live under WORK, and the default folds file of a work folder: every WORK
path is made here, so that moving one is one edit."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def cache_dir(work) -> Path:
    return Path(work) / "cache"


def models_root(work, name: str | None = None) -> Path:
    """WORK/models, or one model's folder of fold checkpoints."""
    root = Path(work) / "models"
    return root if name is None else root / name


def model_dir(work, name: str, fold: int) -> Path:
    return models_root(work, name) / f"fold{fold}"


def embeddings_root(work, name: str | None = None) -> Path:
    """WORK/embeddings, or one model's folder of fold embeddings."""
    root = Path(work) / "embeddings"
    return root if name is None else root / name


def embedding_dir(work, name: str, fold: int) -> Path:
    return embeddings_root(work, name) / f"fold{fold}"


def predictions_root(work) -> Path:
    return Path(work) / "predictions"


def prediction_dir(work, name: str) -> Path:
    return predictions_root(work) / name


def reports_dir(work) -> Path:
    return Path(work) / "reports"


def boxes_dir(work) -> Path:
    return Path(work) / "boxes"


def bundle_dir(work) -> Path:
    """Where `whale bundle` writes by default."""
    return Path(work) / "bundle"


def uploads_dir(work) -> Path:
    return Path(work) / "uploads"


def stamps_dir(work) -> Path:
    return Path(work) / "stamps"


def own_folds_file(work) -> Path:
    """The folds file of a chain run in one process (run_chain: tests, benchmarks; the catalogue's
    zero-shot work), kept in WORK rather than under folds/."""
    return Path(work) / "folds.csv"


def own_submission(work) -> Path:
    """The submission a chain run in one process writes when no other is named."""
    return Path(work) / "sub.csv"


def layout_dir(work) -> Path:
    """The Kaggle layout (train/, train.csv, test/) a catalogue writes from its photos for its zero-shot work."""
    return Path(work) / "data"


def folds_with(root: Path, filename: str) -> list[int]:
    """Fold numbers k for which root/fold<k>/<filename> exists (trained models, written embeddings)."""
    return sorted(int(p.parent.name[4:]) for p in Path(root).glob(f"fold*/{filename}"))


def embedded_models(work) -> list[str]:
    """Every model with embeddings in WORK."""
    root = embeddings_root(work)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def default_folds_file(work, folds_dir: str | Path = "folds") -> Path:
    """folds/<data set>-<hash of its path>.csv for the data set cached in WORK: two data sets in one
    checkout never share a folds file. Before preprocess has run, folds/<work folder name>.csv."""
    report = cache_dir(work) / "preprocess.json"
    if report.is_file():
        data = Path(json.loads(report.read_text())["data"]).resolve()
        digest = hashlib.sha1(str(data).encode()).hexdigest()[:8]
        return Path(folds_dir) / f"{data.name}-{digest}.csv"
    return Path(folds_dir) / f"{Path(work).resolve().name}.csv"
