"""Identify new photos against the known whales: the fold models of one or more trained recipes,
their train embeddings as the gallery, per-whale scores fused over folds and models, and new_whale
inserted at the tuned threshold. Used by `whale identify`, the web page and the report."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import columns as C
from pipeline.data.cache import ImageCache, cache_dir
from pipeline.errors import PipelineError
from pipeline.retrieval.embeddings import load_embeddings
from pipeline.retrieval.index import search
from pipeline.retrieval.scores import fuse, whale_scores
from pipeline.retrieval.threshold import predict, top_whales
from pipeline.stages.common import embedding_dir, folds_with, model_dir, prediction_dir


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
    name: str
    model: object
    gallery: np.ndarray  # embeddings of known train photos
    gallery_names: np.ndarray
    gallery_ids: np.ndarray
    flip_tta: bool


class Identifier:
    def __init__(self, work: str | Path, models: list[str], threshold: float | None = None, photos_per_whale: int = 3):
        from pipeline.models.net import model_from_checkpoint
        from pipeline.retrieval.predictions import fallback_whales
        from pipeline.training.checkpoint import load_checkpoint
        from pipeline.training.device import pick_device

        self.work, self.device = Path(work), pick_device()
        self.cache = ImageCache.open(work)
        train = self.cache.split(C.TRAIN)
        known = train[train[C.ID] != C.NEW_WHALE]
        self.image_size = tuple(self.cache.images.shape[1:3])
        report = cache_dir(work) / "preprocess.json"
        facts = json.loads(report.read_text()) if report.is_file() else {}
        self.data_dir = Path(facts["data"]) if "data" in facts else None
        # Query photos get the automatic crop when the cached photos did.
        self.auto_crop = bool(facts.get("auto_crop", False))
        self.fold_models: list[_FoldModel] = []
        for name in models:
            folds = folds_with(self.work / "models" / name, "final.pt")
            if not folds:
                raise PipelineError(f"model {name!r} has no trained fold; run train and embed first",
                                    self.work / "models" / name)
            for fold in folds:
                state = load_checkpoint(model_dir(work, name, fold) / "final.pt")
                net = model_from_checkpoint(state).to(self.device).eval()
                vectors = load_embeddings(embedding_dir(work, name, fold), known[C.IMAGE], C.TRAIN)
                self.fold_models.append(_FoldModel(name, net, vectors, known[C.IMAGE].to_numpy(),
                                                   known[C.ID].to_numpy(), bool(state["config"]["embed"]["flip_tta"])))
        self.threshold = threshold if threshold is not None else self._tuned_threshold(models)
        self.fallback = fallback_whales(known)
        self.photos_per_whale = photos_per_whale

    def _tuned_threshold(self, models: list[str]) -> float:
        candidates = [prediction_dir(self.work, "ensemble")] if len(models) > 1 else []
        candidates += [prediction_dir(self.work, models[0]), prediction_dir(self.work, "ensemble")]
        for folder in candidates:
            path = folder / "threshold.json"
            if path.is_file():
                return float(json.loads(path.read_text())["threshold"])
        raise PipelineError("no tuned new_whale threshold; run the knn stage (or pass --threshold)",
                            prediction_dir(self.work, models[0]) / "threshold.json")

    def load_photo(self, path: str | Path) -> np.ndarray:
        from pipeline.data.images import UnreadableImage, load_rgb

        try:
            return load_rgb(Path(path), self.image_size, auto_crop=self.auto_crop)[0]
        except UnreadableImage as e:
            raise PipelineError(str(e), path) from None
        except FileNotFoundError:
            raise PipelineError("file not found", path) from None

    def identify(self, photos: list[np.ndarray], names: list[str]) -> list[Identification]:
        from pipeline.models.embedding import embed_rows

        batch = np.stack(photos)
        tables, neighbours = [], []
        for fm in self.fold_models:
            queries = embed_rows(fm.model, batch, np.arange(len(batch)), 32, fm.flip_tta, self.device, desc="identify")
            sims, idx = search(fm.gallery, queries, 200)
            tables.append(whale_scores(sims, idx, fm.gallery_ids, names, keep_top=50))
            neighbours.append((fm, sims, idx))
        fused = fuse(tables)
        ids, vals = top_whales(fused, names)
        labels = predict(ids, vals, self.threshold, self.fallback)
        score_of = fused.set_index([C.IMAGE, C.ID])[C.SCORE]
        out = []
        for q, (name, row) in enumerate(zip(names, labels)):
            candidates = []
            for whale in row:
                if whale == C.NEW_WHALE:
                    candidates.append(Candidate(whale, None))
                    continue
                score = score_of.get((name, whale))
                candidates.append(Candidate(whale, None if score is None else float(score),
                                            self._best_photos(neighbours, q, whale)))
            out.append(Identification(name, candidates))
        return out

    def _best_photos(self, neighbours, q: int, whale: str) -> list[str]:
        fm, sims, idx = neighbours[0]
        hits = [fm.gallery_names[i] for i in idx[q] if i >= 0 and fm.gallery_ids[i] == whale]
        hits = hits[: self.photos_per_whale]
        if self.data_dir is not None:
            return [str(self.data_dir / "train" / h) for h in hits]
        return hits
