"""Identify new photos against the known whales exactly as knn and the ensemble scored test photos:
each fold model searches its own gallery with the retriever its knn run used (the config saved with its
predictions), scores are fused over folds and over models as the prediction set fused them, and the
prediction set's own new_whale policy (fitted on that scale) places new_whale. Each candidate's
best-matching photos come from the searches that scored it. Used by `whale identify` and the web page.

One model: its predictions (predictions/<model>). Several: the ensemble's fusion of them
(predictions/ensemble_fusion, from `whale ensemble` with `fusion` among its methods)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline import columns as C
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.data.folds import read_folds
from pipeline.errors import PipelineError
from pipeline.io.paths import embedding_dir, model_dir, prediction_dir
from pipeline.retrieval.embeddings import load_embeddings
from pipeline.retrieval.local_features import DescriptorStore, sift_descriptors
from pipeline.retrieval.predictions import Predictions, fallback_whales
from pipeline.retrieval.retriever import Retriever, fold_gallery, fuse_folds, merge_photos
from pipeline.retrieval.scores import fuse


@dataclass
class Candidate:
    whale: str
    score: float | None  # None for new_whale
    photos: list[str] = field(default_factory=list)  # the whale's best-matching train photos


@dataclass
class Identification:
    query: str
    candidates: list[Candidate]

    def as_dict(self) -> dict:
        return {"query": self.query, "top5": [
            {"id": c.whale, "score": None if c.score is None else round(float(c.score), 4), "photos": c.photos}
            for c in self.candidates]}


@dataclass
class _FoldModel:
    model: object
    gallery: object  # retriever.Gallery
    flip_tta: bool


def prediction_set(work, models: list[str]) -> tuple[Path, list[float]]:
    """The prediction folder whose scale and policy identify reproduces, and the models' weights."""
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


class Identifier:
    def __init__(self, work: str | Path, models: list[str], threshold: float | None = None):
        from pipeline.models.net import model_from_checkpoint
        from pipeline.training.checkpoint import load_checkpoint
        from pipeline.training.device import pick_device

        self.work, self.device, self.models = Path(work), pick_device(), list(models)
        self.cache = ImageCache.open(work)
        self.image_size = tuple(self.cache.images.shape[1:3])
        report = cache_dir(work) / "preprocess.json"
        facts = json.loads(report.read_text()) if report.is_file() else {}
        self.data_dir = Path(facts["data"]) if "data" in facts else None
        self.auto_crop = bool(facts.get("auto_crop", False))  # query photos are cropped as the cache was
        folder, self.weights = prediction_set(work, models)
        self.policy = Predictions.read(folder).policy
        if threshold is not None:
            self.policy.threshold = float(threshold)
        folds_path = self.policy.fitted.get("folds_file")
        if not folds_path:
            raise PipelineError("these predictions predate recorded fold galleries; re-run knn", folder / "threshold.json")
        folds = read_folds(folds_path)
        self.fallback = fallback_whales(folds)
        self.fold_models: dict[str, list[_FoldModel]] = {}
        self.retrievers: dict[str, Retriever] = {}
        for name in models:
            config_path = prediction_dir(work, name) / "config.yaml"
            if not config_path.is_file():
                raise PipelineError("no saved config for these predictions; re-run knn", config_path)
            saved = yaml.safe_load(config_path.read_text())
            store = DescriptorStore.open(work, saved["knn"]["local_keypoints"]) if saved["knn"].get("local") else None
            self.retrievers[name] = Retriever.from_config(saved, descriptors=store)
            fold_list = sorted(int(f) for f in Predictions.read(prediction_dir(work, name)).oof[C.FOLD].unique())
            self.fold_models[name] = []
            for fold in fold_list:
                state = load_checkpoint(model_dir(work, name, fold) / "final.pt")
                net = model_from_checkpoint(state).to(self.device).eval()
                vectors = load_embeddings(embedding_dir(work, name, fold), folds[C.IMAGE], C.TRAIN)
                self.fold_models[name].append(_FoldModel(net, fold_gallery(vectors, folds, fold),
                                                         bool(state["config"]["embed"]["flip_tta"])))
        self.photos_per_whale = int(next(iter(self.retrievers.values())).cfg["photos_per_whale"])

    @property
    def threshold(self) -> float | None:
        return self.policy.threshold

    def load_photo(self, path: str | Path) -> np.ndarray:
        from pipeline.data.images import UnreadableImage, load_rgb

        try:
            return load_rgb(Path(path), self.image_size, auto_crop=self.auto_crop)[0]
        except UnreadableImage as e:
            raise PipelineError(str(e), path) from None
        except FileNotFoundError:
            raise PipelineError("file not found", path) from None

    def scores(self, photos: list[np.ndarray], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(fused score table, best photos per candidate) for the photos, as knn/ensemble would score them."""
        from pipeline.models.embedding import embed_rows

        batch = np.stack(photos)
        per_model, photo_tables, local = [], [], {}
        for name in self.models:
            retriever = self.retrievers[name]
            keypoints = retriever.cfg.get("local_keypoints")
            if retriever.local is not None and keypoints not in local:
                local[keypoints] = [sift_descriptors(photo, keypoints) for photo in photos]
            tables, known = [], []
            for fm in self.fold_models[name]:
                queries = embed_rows(fm.model, batch, np.arange(len(batch)), 32, fm.flip_tta, self.device,
                                     desc="identify")
                result = retriever.search(fm.gallery, queries, names, photos=self.photos_per_whale,
                                          query_descriptors=local.get(keypoints))
                tables.append(result.scores)
                known.append(set(fm.gallery.ids))
                photo_tables.append(result.photos)
            per_model.append(fuse_folds(tables, known))
        return fuse(per_model, self.weights), merge_photos(photo_tables, self.photos_per_whale)

    def identify(self, photos: list[np.ndarray], names: list[str]) -> list[Identification]:
        fused, best = self.scores(photos, names)
        labels = self.policy.labels(fused, names, self.fallback)
        score_of = fused.set_index([C.IMAGE, C.ID])[C.SCORE]
        photos_of = best.groupby([C.IMAGE, C.ID])["photo"].apply(list)
        out = []
        for name, row in zip(names, labels):
            candidates = []
            for whale in row:
                if whale == C.NEW_WHALE:
                    candidates.append(Candidate(whale, None))
                    continue
                score = score_of.get((name, whale))
                hits = photos_of.get((name, whale), [])
                if self.data_dir is not None:
                    hits = [str(self.data_dir / "train" / h) for h in hits]
                candidates.append(Candidate(whale, None if score is None else float(score), hits))
            out.append(Identification(name, candidates))
        return out
