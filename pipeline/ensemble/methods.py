"""The ensemble's methods over several models' fold predictions:

  fusion      weighted mean of the models' per-whale kNN scores;
  classifier  a softmax classifier over the models' concatenated embeddings: for fold k it trains on
              fold k's training photos only, predicts fold k's validation photos (out of fold) and
              test, test averaged over the fold classifiers that know the whale; with knn.local its
              probabilities are re-scored by local-feature matching as the retriever's scores are
              (ensemble.classifier.local), so it weighs the same evidence as fusion;
  blend       blend_weight * fusion + (1 - blend_weight) * classifier probability.

Pseudo-labels are chosen per fold: fold k's second-round classifier learns only test photos that fold
k's first-round classifier (which never saw fold k's validation photos) was confident about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.io.paths import embedding_dir
from pipeline.registry import Registry
from pipeline.retrieval.retriever import Gallery
from pipeline.retrieval.scores import fuse

# ensemble.methods names them (registered below); a method combines the members' predictions, or the
# results of the methods it `needs`, into an (out-of-fold table, test table) pair.
METHODS = Registry("ensemble method", "ensemble.methods")


def fusion(oofs: list[pd.DataFrame], tests: list[pd.DataFrame], weights: list[float], folds: pd.DataFrame):
    fold_of = folds.set_index(C.IMAGE)[C.FOLD]
    oof = fuse([o.drop(columns=C.FOLD) for o in oofs], weights)
    return oof.assign(**{C.FOLD: oof[C.IMAGE].map(fold_of)}), fuse(tests, weights)


def classifier_fold(work, models: list[dict], folds: pd.DataFrame, fold: int, test_names, cfg: dict,
                    extra: pd.DataFrame | None = None, matcher=None) -> tuple[pd.DataFrame, pd.DataFrame, set]:
    """Fold k's classifier: (out-of-fold table, test table, its classes). `extra` (Image, Id) are
    pseudo-labelled test photos added to its training. `matcher` (the registered "local" re-scorer, postprocess/local.py):
    its tables are re-scored with local-feature matches against fold k's gallery, as the retriever's are."""
    from pipeline.ensemble.classifier import predict_proba, top_table, train_classifier
    from pipeline.ensemble.features import centred, concatenated, mirrored

    ccfg, keep = cfg["ensemble"]["classifier"], cfg["knn"]["keep_top"]
    weights = [m["weight"] for m in models]
    dirs = [embedding_dir(work, m["name"], fold) for m in models]
    train = folds[(folds[C.ID] != C.NEW_WHALE) & (folds[C.FOLD] != fold)]
    val = folds[folds[C.FOLD] == fold]
    x = known = concatenated(dirs, weights, train[C.IMAGE], C.TRAIN)
    ids = train[C.ID].to_numpy()
    if extra is not None and len(extra):
        x = np.concatenate([x, concatenated(dirs, weights, extra[C.IMAGE], C.TEST)])
        ids = np.concatenate([ids, extra[C.ID].to_numpy()])
    classes = np.array(sorted(set(ids)))
    y = np.searchsorted(classes, ids)
    dims = [np.load(Path(d) / "test.npy", mmap_mode="r").shape[1] for d in dirs]
    if ccfg["flips"]:
        x = np.concatenate([x, mirrored(x, dims)])
        y = np.concatenate([y, y + len(classes)])
    mean = x.mean(axis=0) if ccfg.get("centre") else None  # the classifier's own training photos only
    if mean is not None:
        x = centred(x, mean, dims, weights)
    model = train_classifier(x, y, len(classes) * (2 if ccfg["flips"] else 1), ccfg, seed=int(cfg["seed"]) + fold)
    n = len(classes)  # mirrored classes compete in the softmax but are never answers
    # The photos it learned are the gallery that local matching compares a query with.
    gallery = Gallery(known, train[C.ID].to_numpy(), train[C.IMAGE].to_numpy())
    tables = []
    for names, split in ((val[C.IMAGE].to_numpy(), C.TRAIN), (np.asarray(test_names), C.TEST)):
        features = concatenated(dirs, weights, names, split)
        scored = features if mean is None else centred(features, mean, dims, weights)
        table = top_table(predict_proba(model, scored)[:, :n], classes, names, keep)
        if matcher is not None:
            table = matcher.rescore(table, matcher.store.get(names, split), names, known, features, gallery)
        tables.append(table)
    return tables[0].assign(**{C.FOLD: fold}), tables[1], set(classes)


def pseudo_labels(test: pd.DataFrame, min_score: float) -> pd.DataFrame:
    """Test photos whose best whale scores at least min_score, with that whale."""
    best = test.sort_values([C.IMAGE, C.SCORE], ascending=[True, False]).drop_duplicates(C.IMAGE)
    chosen = best[best[C.SCORE] >= min_score]
    return chosen[[C.IMAGE, C.ID]].reset_index(drop=True)


def classifier(work, models, folds, fold_list, test_names, cfg) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(out-of-fold table, test table, pseudo-labels per fold) of the classifier method."""
    pseudo_cfg = cfg["ensemble"]["pseudo_labels"]
    matcher = None
    if cfg["ensemble"]["classifier"]["local"] and cfg["knn"]["local"]:
        from pipeline.retrieval.local.extract import DescriptorStore
        from pipeline.retrieval.postprocess import POSTPROCESSORS

        # The classifier's probabilities are not the retriever's scores: a calibration fitted on those
        # (knn.local_calibrate) would not apply, so they take the plain blend with the local evidence.
        # The registered re-scorer, as the retriever runs it (its rescore goes through process).
        matcher = POSTPROCESSORS.get("local")({**cfg["knn"], "local_calibrate": False}, int(cfg["seed"]),
                                              DescriptorStore.open(work, cfg["knn"]["local_keypoints"]))
    oofs, tests, known, chosen = [], [], [], {}
    for fold in fold_list:
        oof, test, classes = classifier_fold(work, models, folds, fold, test_names, cfg, matcher=matcher)
        if pseudo_cfg["enabled"]:
            # Chosen by this fold's own classifier: fold k's validation labels never reach fold k.
            chosen[fold] = pseudo_labels(test, float(pseudo_cfg["min_score"]))
            oof, test, classes = classifier_fold(work, models, folds, fold, test_names, cfg, chosen[fold], matcher)
        oofs.append(oof)
        tests.append(test)
        known.append(classes)
    return pd.concat(oofs, ignore_index=True), fuse(tests, known=known), chosen


def blend(fusion_result, classifier_result, weight: float, folds: pd.DataFrame):
    fold_of = folds.set_index(C.IMAGE)[C.FOLD]
    oof = fuse([fusion_result[0].drop(columns=C.FOLD), classifier_result[0].drop(columns=C.FOLD)], [weight, 1 - weight])
    return oof.assign(**{C.FOLD: oof[C.IMAGE].map(fold_of)}), fuse([fusion_result[1], classifier_result[1]],
                                                                   [weight, 1 - weight])


@dataclass
class Run:
    """What a method reads: the members, their predictions on the folds every member covers, the
    folds, the config; `results` holds the methods run so far (a method's `needs` run first), and
    the classifier leaves its pseudo-labels per fold in `pseudo_labels` for the stage to report."""
    work: Path
    models: list[dict]
    oofs: list[pd.DataFrame]
    tests: list[pd.DataFrame]
    folds: pd.DataFrame
    fold_list: list[int]
    cfg: dict
    results: dict = field(default_factory=dict)
    pseudo_labels: dict = field(default_factory=dict)

    @property
    def weights(self) -> list[float]:
        return [m["weight"] for m in self.models]

    def test_names(self) -> np.ndarray:
        from pipeline.data.cache import ImageCache

        return ImageCache.open(self.work).split(C.TEST)[C.IMAGE].to_numpy()


def run_order(methods) -> list[str]:
    """The methods asked for and those they need, each once, every one after what it needs; an
    unknown name is the registry's error listing the methods there are."""
    order: list[str] = []

    def visit(name):
        if name not in order:
            for need in METHODS.get(name).needs:
                visit(need)
            order.append(name)

    for name in methods:
        visit(name)
    return order


def run_methods(r: Run, methods) -> dict:
    """Runs the methods asked for (and what they need, first) into r.results; returns it."""
    for name in run_order(methods):
        r.results[name] = METHODS.get(name).run(r)
    return r.results


def reads_embeddings(methods) -> bool:
    """Whether any of these methods (or what they need) reads the members' embeddings: the stage's
    stamp then covers them."""
    return any(METHODS.get(name).embeddings for name in run_order(methods))


@METHODS.register("fusion")
class Fusion:
    needs, embeddings = (), False

    @staticmethod
    def run(r: Run):
        return fusion(r.oofs, r.tests, r.weights, r.folds)


@METHODS.register("classifier")
class Classifier:
    needs, embeddings = (), True

    @staticmethod
    def run(r: Run):
        oof, test, r.pseudo_labels = classifier(r.work, r.models, r.folds, r.fold_list, r.test_names(), r.cfg)
        return oof, test


@METHODS.register("blend")
class Blend:
    needs, embeddings = ("fusion", "classifier"), False

    @staticmethod
    def run(r: Run):
        return blend(r.results["fusion"], r.results["classifier"], float(r.cfg["ensemble"]["blend_weight"]), r.folds)
