"""Matching against a catalogue: the bundle's fold networks and retriever settings, with every
gallery made of the catalogue's confirmed photos (each fold model's gallery holds them all: the
catalogue is the gallery). Galleries and their indexes are built once when the matcher opens; a
confirmed photo is appended to them (its embeddings were stored when it was added), so the next query
can match it at once. Decisions made by another process (the web page beside the command line) are
picked up before each ranking: confirmations are appended, anything else reloads the galleries."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import numpy as np

from pipeline import columns as C
from pipeline.bundle import Bundle, NamedDescriptors
from pipeline.catalogue.store import Store
from pipeline.errors import PipelineError
from pipeline.identify import candidate_lists
from pipeline.retrieval.local.extract import empty_features
from pipeline.retrieval.retriever import Gallery

SHOWN = 5  # candidates kept per photo for the reviewer


@dataclass
class Ranking:
    candidates: list[dict]  # [{id, score, photos: [hash...]}], best first
    p_new: float
    suggested: str  # an individual's id, or "new"
    policy_labels: list[str]


class CatalogueMatcher:
    def __init__(self, store: Store, bundle: Bundle):
        from pipeline.identify import Identifier

        self.store, self.bundle = store, bundle
        self.lock = threading.RLock()  # the web server's threads share one matcher
        self._load_galleries()
        self.identifier = Identifier(bundle=bundle)

    @classmethod
    def open(cls, store: Store) -> "CatalogueMatcher":
        return cls(store, Bundle.load(store.folder / "bundle"))

    @property
    def version(self) -> str:
        return self.bundle.version

    def _load_galleries(self) -> None:
        """Every fold model's gallery and the local descriptors, from the database."""
        self.seen_decision = int(self.store.db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0])
        for model in self.bundle.models:
            for fold in model.checkpoints:
                hashes, ids, vectors = self.store.embeddings(model.name, fold)
                if vectors is None:
                    raise PipelineError("the catalogue holds no confirmed photo to match against", self.store.folder)
                fresh = Gallery(vectors, np.asarray(ids, dtype=object), np.asarray(hashes, dtype=object))
                model.galleries[fold] = fresh
        keypoints = {int(m.config["knn"]["local_keypoints"]) for m in self.bundle.models if m.config["knn"].get("local")}
        self.bundle.descriptors = {k: NamedDescriptors(self.store.descriptors(k)) for k in keypoints}
        if hasattr(self, "identifier"):  # reloading: point the fold models and retrievers at the new galleries
            from pipeline.retrieval.retriever import Retriever

            for model in self.bundle.models:
                knn = model.config["knn"]
                store = self.bundle.descriptors.get(int(knn["local_keypoints"])) if knn.get("local") else None
                self.identifier.retrievers[model.name] = Retriever.from_config(model.config, descriptors=store)
                for fm in self.identifier.fold_models[model.name]:
                    fm.gallery = model.galleries[fm.fold]
                    fm.gallery.index(self.identifier.retrievers[model.name]._index_options())

    def reload(self) -> None:
        with self.lock:
            self._load_galleries()

    def gallery_size(self) -> int:
        first = self.bundle.models[0]
        return len(first.galleries[next(iter(first.checkpoints))])

    # ------------------------------------------------------------------------------- growth

    def append(self, digest: str, individual: str) -> None:
        """A confirmed photo joins every gallery (and the local descriptors) at once."""
        with self.lock:
            for model in self.bundle.models:
                for fold in model.checkpoints:
                    _, _, vectors = self.store.embeddings(model.name, fold, [digest], status=None)
                    if vectors is None:
                        raise PipelineError(f"photo {digest[:12]} has no embedding by {model.name} fold {fold}; "
                                            "run `whale catalogue init --rebind`", self.store.folder)
                    model.galleries[fold].append(vectors, [individual], [digest])
            for keypoints, source in self.bundle.descriptors.items():
                found = self.store.descriptors(keypoints, [digest])
                if digest in found:
                    source.add(digest, found[digest])

    def relabel(self) -> None:
        """Individuals changed for photos already in the galleries (merge, split): same rows, new ids."""
        with self.lock:
            current = dict(self.store.db.execute("SELECT hash, individual_id FROM photos WHERE status = 'confirmed'"))
            for model in self.bundle.models:
                for gallery in model.galleries.values():
                    gallery.relabel(np.asarray([current.get(str(h), i) for h, i in zip(gallery.names, gallery.ids)],
                                               dtype=object))

    def sync(self) -> None:
        """Applies decisions other processes committed since this matcher last looked."""
        with self.lock:
            rows = self.store.db.execute("SELECT id, kind, photo, individual_id FROM decisions WHERE id > ? ORDER BY id",
                                         (self.seen_decision,)).fetchall()
            if not rows:
                return
            if any(r["kind"] not in ("match", "new", "unsure", "junk", "merge", "split") for r in rows):
                self._load_galleries()  # an undo removes photos from the galleries: rebuild them
                return
            for r in rows:
                if r["kind"] in ("match", "new"):
                    self.append(r["photo"], r["individual_id"])
            if any(r["kind"] in ("merge", "split") for r in rows):
                self.relabel()
            self.seen_decision = int(rows[-1]["id"])

    # ------------------------------------------------------------------------------- ranking

    def embed(self, photos: list[np.ndarray]) -> tuple[dict, dict]:
        """(model, fold) -> embeddings and local_keypoints -> descriptors of the photos."""
        with self.lock:
            return self.identifier.embed(photos), self.identifier.local_descriptors(photos)

    def rank(self, embeddings: dict, local: dict, names: list[str]) -> list[Ranking]:
        with self.lock:
            self.sync()
            fused, best = self.identifier.rank(embeddings, local, names)
            p_new = self.identifier.new_probability(fused, names)
            labels = self.identifier.policy.labels(fused, names, self.identifier.fallback)
        out = []
        for i, shown in enumerate(candidate_lists(fused, best, names, top=SHOWN)):
            candidates = [{"id": str(c.whale), "score": round(c.score, 4), "photos": c.photos} for c in shown]
            suggested = "new" if labels[i][0] == C.NEW_WHALE or not candidates else candidates[0]["id"]
            out.append(Ranking(candidates, float(p_new[i]), suggested, list(labels[i])))
        return out

    def stored_query(self, hashes: list[str]) -> tuple[dict, dict]:
        """The stored embeddings and descriptors of catalogue photos, as `embed` would give them."""
        embeddings = {}
        for model in self.bundle.models:
            for fold in model.checkpoints:
                found, _, vectors = self.store.embeddings(model.name, fold, hashes, status=None)
                if found != list(hashes):
                    raise PipelineError(f"{len(hashes) - len(found)} photo(s) lack an embedding by {model.name} "
                                        f"fold {fold}; run `whale catalogue init --rebind`", self.store.folder)
                embeddings[(model.name, fold)] = vectors
        local = {}
        for keypoints in self.bundle.descriptors:
            found = self.store.descriptors(keypoints, hashes)
            local[keypoints] = [found.get(h, empty_features()) for h in hashes]
        return embeddings, local


def ranking_json(ranking: Ranking) -> str:
    return json.dumps({"candidates": ranking.candidates, "policy_labels": ranking.policy_labels})
