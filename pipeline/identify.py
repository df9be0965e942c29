"""Identify new photos against the known whales exactly as knn and the ensemble scored test photos:
each fold model searches its own gallery with the retriever its knn run used (the config saved with its
predictions), scores are fused over folds and over models as the prediction set fused them, and the
prediction set's own new_whale policy (fitted on that scale) places new_whale. Each candidate's
best-matching photos come from the searches that scored it. Used by `whale identify` and the web page.

One model: its predictions (predictions/<model>). Several: the ensemble's fusion of them
(predictions/ensemble_fusion, from `whale ensemble` with `fusion` among its methods)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.io.paths import prediction_dir
from pipeline.retrieval.photos import merge_photos
from pipeline.retrieval.retriever import Retriever
from pipeline.retrieval.scores import fuse_models


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
    config: dict  # the checkpoint's config (embed.flip_tta, train.amp)
    fold: int
    # backbone_digest where the backbone never trained (zero-shot, a head on frozen features): folds with
    # the same digest share a photo's pooled features, so the backbone runs once for all of them.
    backbone: str | None = None


def search_fused(retrievers: dict, searches: dict, weights: list[float], embeddings: dict, features: dict, names,
                 photos: int = 0) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Every fold model of every model searches its gallery; (scores fused over folds and models, each
    candidate's best photos). `searches`: model -> [(fold, gallery)], in `weights`' order; `embeddings`:
    (model, fold) -> the queries' vectors; `features`: each re-scorer's per-query features by its
    feature_key (Identifier.local_descriptors). Identify and the catalogue's evaluation both go through it."""
    per_model, photo_tables = [], []
    for name, folds in searches.items():
        retriever = retrievers[name]
        query_features = {r.reads: features.get(r.feature_key) for r in retriever.readers()}
        tables, known = [], []
        for fold, gallery in folds:
            result = retriever.search(gallery, embeddings[(name, fold)], names, photos=photos,
                                      query_features=query_features)
            tables.append(result.scores)
            known.append(gallery.whale_set())
            photo_tables.append(result.photos)
        per_model.append((tables, known))
    fused = fuse_models(per_model, weights)
    return fused, merge_photos(photo_tables, photos) if photos else None


class Identifier:
    """Scores photos against a bundle's galleries (pipeline/bundle.py): the fold networks are loaded and
    every gallery's index is built once, here, never per request."""

    def __init__(self, work: str | Path | None = None, models: list[str] | None = None,
                 threshold: float | None = None, bundle=None):
        from pipeline.bundle import Bundle
        from pipeline.models.net import EmbeddingNet, model_from_checkpoint
        from pipeline.models.pooled_cache import backbone_digest
        from pipeline.training.checkpoint import load_checkpoint
        from pipeline.training.device import pick_device

        if bundle is None:
            bundle = Bundle.from_work(work, list(models), threshold)
        elif threshold is not None:
            bundle.policy.threshold = float(threshold)
        self.bundle, self.device = bundle, pick_device()
        self.models = [m.name for m in bundle.models]
        self.weights = [m.weight for m in bundle.models]
        self.image_size, self.auto_crop, self.framing = bundle.image_size, bundle.auto_crop, dict(bundle.framing)
        self.policy, self.fallback, self.p_new = bundle.policy, bundle.fallback, bundle.p_new
        self.photo_root = bundle.photo_root
        self.fold_models: dict[str, list[_FoldModel]] = {}
        self.retrievers: dict[str, Retriever] = {}
        for model in bundle.models:
            knn = model.config["knn"]
            store = bundle.descriptors.get(int(knn["local_keypoints"])) if knn.get("local") else None
            self.retrievers[model.name] = Retriever.from_config(model.config, descriptors=store)
            self.fold_models[model.name] = []
            for fold in sorted(model.checkpoints):
                state = load_checkpoint(model.checkpoints[fold])
                net = model_from_checkpoint(state).to(self.device).eval()
                shared = backbone_digest(net) if int(state.get("steps", 1)) == 0 and isinstance(net, EmbeddingNet) \
                    else None
                self.fold_models[model.name].append(_FoldModel(net, model.galleries[fold], state["config"], fold,
                                                               shared))
        self.photos_per_whale = int(next(iter(self.retrievers.values())).cfg["photos_per_whale"])
        for name, fold_models in self.fold_models.items():  # every gallery's index, once
            options = self.retrievers[name]._index_options()
            for fm in fold_models:
                fm.gallery.index(options)

    @classmethod
    def from_bundle(cls, folder, threshold: float | None = None) -> "Identifier":
        from pipeline.bundle import Bundle

        return cls(bundle=Bundle.load(folder), threshold=threshold)

    @property
    def threshold(self) -> float | None:
        return self.policy.threshold

    @property
    def version(self) -> str:
        return self.bundle.version

    def load_photo(self, path: str | Path) -> np.ndarray:
        from pipeline.data.images import UnreadableImage, load_rgb

        try:
            return load_rgb(Path(path), self.image_size, auto_crop=self.auto_crop, **self.framing)[0]
        except UnreadableImage as e:
            raise PipelineError(str(e), path) from None
        except FileNotFoundError:
            raise PipelineError("file not found", path) from None

    def embed(self, photos: list[np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
        """(model, fold) -> the photos' embeddings by that fold network."""
        from pipeline.models.embedding import embed_pooled, embed_rows
        from pipeline.models.pooled_cache import pooled_pairs

        batch = np.stack(photos)
        rows = np.arange(len(batch))
        out, pooled = {}, {}
        for name, fold_models in self.fold_models.items():
            for fm in fold_models:
                if fm.backbone is not None:
                    if fm.backbone not in pooled:
                        pooled[fm.backbone] = pooled_pairs(fm.model, batch, rows, 32, self.device)
                    out[(name, fm.fold)] = embed_pooled(fm.model, pooled[fm.backbone], rows,
                                                        bool(fm.config["embed"]["flip_tta"]), self.device)
                    continue
                train = fm.config["train"]
                out[(name, fm.fold)] = embed_rows(fm.model, batch, np.arange(len(batch)), 32,
                                                  bool(fm.config["embed"]["flip_tta"]), self.device,
                                                  amp=bool(train["amp"]), desc="identify",
                                                  **({"amp_dtype": train["amp_dtype"]} if "amp_dtype" in train else {}))
        return out

    def local_descriptors(self, photos: list[np.ndarray]) -> dict:
        """Each re-scorer's per-query features of the photos (postprocess/base.py), by its feature_key
        (local matching: the keypoints), computed once for the models whose re-scorers share it."""
        out = {}
        for retriever in self.retrievers.values():
            for reader in retriever.readers():
                if reader.feature_key not in out:
                    out[reader.feature_key] = reader.photo_features(photos)
        return out

    def rank(self, embeddings: dict, local: dict, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(fused score table, best photos per candidate) for embedded queries, as knn/ensemble score."""
        searches = {name: [(fm.fold, fm.gallery) for fm in self.fold_models[name]] for name in self.models}
        return search_fused(self.retrievers, searches, self.weights, embeddings, local, names, self.photos_per_whale)

    def scores(self, photos: list[np.ndarray], names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(fused score table, best photos per candidate) for the photos, as knn/ensemble would score them."""
        return self.rank(self.embed(photos), self.local_descriptors(photos), names)

    def new_probability(self, fused: pd.DataFrame, names: list[str]) -> np.ndarray:
        """P(new individual) of each query, from its best whale score (decision/calibration.py)."""
        from pipeline.decision.threshold import top_whales

        _, vals = top_whales(fused, names)
        return self.p_new(vals[:, 0])

    def photo_path(self, name: str) -> str:
        return str(self.photo_root / name) if self.photo_root is not None else str(name)

    def identify(self, photos: list[np.ndarray], names: list[str]) -> list[Identification]:
        fused, best = self.scores(photos, names)
        return self.explain(fused, best, names)

    def explain(self, fused: pd.DataFrame, best: pd.DataFrame, names: list[str]) -> list[Identification]:
        labels = self.policy.labels(fused, names, self.fallback)
        lists = candidate_lists(fused, best, names, labels, photo=self.photo_path)
        return [Identification(name, candidates) for name, candidates in zip(names, lists)]


def candidate_lists(fused: pd.DataFrame, best: pd.DataFrame, names, chosen: list | None = None, top: int = 5,
                    photo=str) -> list[list[Candidate]]:
    """Each query's candidates as Candidate(whale, score, photos), one list per name: the whales `chosen`
    for it (the policy's labels; new_whale among them has no score and no photos), else its `top`
    best-scored whales of `fused`. Photos come from `best` (Image, Id, photo, ...: the searches that
    scored the candidate), each passed through `photo`. identify's answer and the catalogue's ranking
    both list candidates through here."""
    score_of = fused.set_index([C.IMAGE, C.ID])[C.SCORE]
    photos_of = best.groupby([C.IMAGE, C.ID])["photo"].apply(list)
    policy = chosen is not None
    if not policy:
        shown = fused.groupby(C.IMAGE, sort=False).head(top).groupby(C.IMAGE, sort=False)[C.ID].apply(list)
        chosen = [shown.get(name, []) for name in names]
    out = []
    for name, whales in zip(names, chosen):
        candidates = []
        for whale in whales:
            if policy and whale == C.NEW_WHALE:
                candidates.append(Candidate(whale, None))
                continue
            score = score_of.get((name, whale))
            hits = [photo(h) for h in photos_of.get((name, whale), [])]
            candidates.append(Candidate(whale, None if score is None else float(score), hits))
        out.append(candidates)
    return out
