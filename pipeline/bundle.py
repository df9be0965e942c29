"""The identification bundle: what a work folder exports for identifying new photos, self-contained.

    bundle = Bundle.from_work(work, ["coupled_clusters"])      # in memory, from a work folder
    bundle.save(out)                                            # or `whale bundle --work W --out DIR`
    bundle = Bundle.load(out)                                   # what identify, serve and the catalogue read

On disk:
    manifest.json                 version id, data fingerprint, models and weights, new_whale policy,
                                  P(new individual) calibration, image size and crop, fallback whales
    models/<name>/config.yaml     the config its predictions were made with (retriever settings)
    models/<name>/fold<k>.pt      fold model k's checkpoint (final.pt)
    galleries/<name>/fold<k>.npz  fold model k's gallery: vectors, ids, photo names
    local/sift-<n>.npz            local descriptors of the gallery photos (knn.local), by photo name

The version id is a digest of every file above but the manifest, so a catalogue's decision can say
which bundle scored the candidates it showed."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from pipeline import columns as C
from pipeline.decision.calibration import NewIndividualCalibration
from pipeline.errors import PipelineError
from pipeline.decision.policy import NewWhalePolicy
from pipeline.retrieval.retriever import Gallery

FORMAT = 1


@dataclass
class BundledModel:
    name: str
    weight: float
    config: dict  # the resolved config of its predictions (knn: the retriever's settings)
    checkpoints: dict[int, Path]  # fold -> checkpoint file
    galleries: dict[int, Gallery]  # fold -> the gallery that fold model searches


class NamedDescriptors:
    """Local descriptors by photo name, with the interface LocalMatcher reads (get, row_of, path). A
    photo it does not hold (say a synthetic gallery row) has no descriptors: it matches nothing."""

    path = None  # no saved match counts: those belong to a work folder's cache

    def __init__(self, arrays: dict):
        from pipeline.retrieval.local.extract import empty_features

        self.arrays = arrays  # name -> local.extract.LocalFeatures
        self._empty = empty_features()

    def get(self, names, split: str = C.TRAIN) -> list[np.ndarray]:
        return [self.arrays.get(n, self._empty) for n in names]

    def add(self, name: str, descriptors: np.ndarray) -> None:
        self.arrays[name] = descriptors

    def row_of(self, descriptors) -> None:
        return None

    @classmethod
    def read(cls, path: Path) -> "NamedDescriptors":
        from pipeline.retrieval.local.extract import LocalFeatures

        saved = np.load(path, allow_pickle=False)
        names, offsets, data, points = saved["names"], saved["offsets"], saved["descriptors"], saved["points"]
        return cls({str(n): LocalFeatures(data[offsets[i]:offsets[i + 1]], points[offsets[i]:offsets[i + 1]])
                    for i, n in enumerate(names)})

    def write(self, path: Path, names) -> None:
        from pipeline.io.atomic import write_npz

        parts = self.get(names)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        data = np.concatenate([np.asarray(p) for p in parts]) if parts else np.zeros((0, 128), dtype=np.uint8)
        points = np.concatenate([p.points for p in parts]) if parts else np.zeros((0, 4), np.float32)
        write_npz(path, names=np.asarray(list(names), dtype=str), offsets=offsets, descriptors=data, points=points)


FRAMING = ("trim_padding", "keep_aspect")  # preprocess settings a query photo is decoded with


@dataclass
class Bundle:
    models: list[BundledModel]
    policy: NewWhalePolicy
    p_new: NewIndividualCalibration
    fallback: list[str]
    image_size: tuple[int, int]
    auto_crop: bool
    photo_root: Path | None  # where the gallery photos' files are (a data set's train/), if known
    descriptors: dict[int, object] = field(default_factory=dict)  # local_keypoints -> descriptor source
    manifest: dict = field(default_factory=dict)
    # How photos fill the cache frame (preprocess.trim_padding, keep_aspect): a query is framed alike.
    framing: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.get("version", "work folder")

    # ------------------------------------------------------------------------------ from a work folder

    @classmethod
    def from_work(cls, work, models: list[str], threshold: float | None = None) -> "Bundle":
        from pipeline.data.cache import ImageCache, cache_dir
        from pipeline.data.folds import read_folds
        from pipeline.io.paths import embedding_dir, model_dir, prediction_dir
        from pipeline.retrieval.embeddings import load_embeddings
        from pipeline.retrieval.local.extract import DescriptorStore
        from pipeline.retrieval.predictions import Predictions, fallback_whales, prediction_set
        from pipeline.retrieval.retriever import fold_gallery

        work = Path(work)
        cache = ImageCache.open(work)
        report = cache_dir(work) / "preprocess.json"
        facts = json.loads(report.read_text()) if report.is_file() else {}
        folder, weights = prediction_set(work, models)
        predictions = Predictions.read(folder)
        policy = predictions.policy
        if threshold is not None:
            policy.threshold = float(threshold)
        folds_path = policy.fitted.get("folds_file")
        if not folds_path:
            raise PipelineError("these predictions predate recorded fold galleries; re-run knn", folder / "threshold.json")
        folds = read_folds(folds_path)
        queries = folds[folds[C.FOLD].isin(predictions.oof[C.FOLD].unique())]
        p_new = NewIndividualCalibration.from_predictions(predictions.oof, queries)
        bundled, descriptors = [], {}
        for name, weight in zip(models, weights):
            config_path = prediction_dir(work, name) / "config.yaml"
            if not config_path.is_file():
                raise PipelineError("no saved config for these predictions; re-run knn", config_path)
            saved = yaml.safe_load(config_path.read_text())
            calibration = prediction_dir(work, name) / "local_calibration.json"
            if saved["knn"].get("local_calibrate") and calibration.is_file():  # fitted by knn on every fold
                saved["knn"]["local_calibration"] = json.loads(calibration.read_text())
            if saved["knn"].get("local"):
                keypoints = int(saved["knn"]["local_keypoints"])
                if keypoints not in descriptors:
                    descriptors[keypoints] = DescriptorStore.open(work, keypoints)
            fold_list = sorted(int(f) for f in Predictions.read(prediction_dir(work, name)).oof[C.FOLD].unique())
            checkpoints, galleries = {}, {}
            for fold in fold_list:
                checkpoints[fold] = model_dir(work, name, fold) / "final.pt"
                vectors = load_embeddings(embedding_dir(work, name, fold), folds[C.IMAGE], C.TRAIN)
                galleries[fold] = fold_gallery(vectors, folds, fold)
            bundled.append(BundledModel(name, float(weight), saved, checkpoints, galleries))
        fingerprint = hashlib.sha256()
        for path in (Path(facts.get("data", "")) / "train.csv", Path(folds_path)):
            if path.is_file():
                fingerprint.update(path.read_bytes())
        manifest = {"format": FORMAT, "work": str(work.resolve()), "data": facts.get("data"),
                    "data_fingerprint": fingerprint.hexdigest()[:16], "folds_file": str(folds_path)}
        return cls(bundled, policy, p_new, fallback_whales(folds), tuple(cache.images.shape[1:3]),
                   bool(facts.get("auto_crop", False)),
                   Path(facts["data"]) / "train" if "data" in facts else None, descriptors, manifest,
                   framing={k: bool(facts.get(k, False)) for k in FRAMING})

    # --------------------------------------------------------------------------------------- on disk

    def save(self, out) -> str:
        """Writes the bundle to `out` (replacing a bundle there) and returns its version id."""
        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        digest = hashlib.sha256()
        entries = []
        for model in self.models:
            mdir = tmp / "models" / model.name
            mdir.mkdir(parents=True)
            (mdir / "config.yaml").write_text(yaml.safe_dump(model.config, sort_keys=False))
            for fold, checkpoint in model.checkpoints.items():
                shutil.copyfile(checkpoint, mdir / f"fold{fold}.pt")
                g = model.galleries[fold]
                gdir = tmp / "galleries" / model.name
                gdir.mkdir(parents=True, exist_ok=True)
                np.savez(gdir / f"fold{fold}.npz", vectors=g.vectors, ids=np.asarray(g.ids, dtype=str),
                         names=np.asarray(g.names, dtype=str),
                         negatives=g.negatives if g.negatives is not None else np.zeros((0, g.vectors.shape[1]),
                                                                                        np.float32))
            entries.append({"name": model.name, "weight": model.weight, "folds": sorted(model.checkpoints)})
        names = sorted({str(n) for m in self.models for g in m.galleries.values() for n in g.names})
        for keypoints, store in self.descriptors.items():
            (tmp / "local").mkdir(exist_ok=True)
            NamedDescriptors({n: a for n, a in zip(names, store.get(names, C.TRAIN))}).write(
                tmp / "local" / f"sift-{keypoints}.npz", names)
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(tmp)).encode())
            digest.update(path.read_bytes())
        version = digest.hexdigest()[:12]
        manifest = {**self.manifest, "format": FORMAT, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "models": entries, "policy": self.policy.to_dict(), "p_new": self.p_new.to_dict(),
                    "fallback": self.fallback, "image_size": list(self.image_size), "auto_crop": self.auto_crop,
                    "framing": self.framing,
                    "photo_root": None if self.photo_root is None else str(self.photo_root),
                    "local_keypoints": sorted(self.descriptors)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        self.manifest = manifest
        return version

    @classmethod
    def load(cls, folder) -> "Bundle":
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise PipelineError("not an identification bundle (no manifest.json); make one with `whale bundle`",
                                folder)
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise PipelineError(f"bundle format {manifest.get('format')!r}, this pipeline reads {FORMAT}", path)
        models = []
        for entry in manifest["models"]:
            mdir, gdir = folder / "models" / entry["name"], folder / "galleries" / entry["name"]
            config = yaml.safe_load((mdir / "config.yaml").read_text())
            checkpoints, galleries = {}, {}
            for fold in entry["folds"]:
                checkpoints[int(fold)] = mdir / f"fold{fold}.pt"
                saved = np.load(gdir / f"fold{fold}.npz", allow_pickle=False)
                negatives = saved["negatives"]
                galleries[int(fold)] = Gallery(saved["vectors"], saved["ids"].astype(object),
                                               saved["names"].astype(object), negatives if len(negatives) else None)
            models.append(BundledModel(entry["name"], float(entry["weight"]), config, checkpoints, galleries))
        descriptors = {int(k): NamedDescriptors.read(folder / "local" / f"sift-{k}.npz")
                       for k in manifest.get("local_keypoints", [])}
        root = manifest.get("photo_root")
        return cls(models, NewWhalePolicy.from_dict(manifest["policy"]),
                   NewIndividualCalibration.from_dict(manifest["p_new"]), list(manifest["fallback"]),
                   tuple(manifest["image_size"]), bool(manifest["auto_crop"]), Path(root) if root else None,
                   descriptors, manifest, framing={k: bool(manifest.get("framing", {}).get(k, False)) for k in FRAMING})
