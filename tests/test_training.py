"""Training: resume continues where it stopped, the time budget stops cleanly, a foreign checkpoint is refused."""
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.config import load_stage_config
from pipeline.data.cache import ImageCache
from pipeline.data.samplers import PKBatchSampler
from pipeline.errors import PipelineError
from pipeline.data.folds import read_folds
from pipeline.training.fit import fit
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
         "sampler.photos_per_class=2"]


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    sets = [x for s in SMALL for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return ImageCache.open(work), read_folds(work / "folds.csv")


def config(*extra):
    return load_stage_config(REPO / "configs", "test_arcface", [*SMALL, *extra])


def test_resume_continues_and_matches_an_uninterrupted_run(prepared, tmp_path):
    cache, folds = prepared
    fit(config("train.epochs=2"), cache, folds, 0, tmp_path / "a")
    # Same run asked for 4 epochs: resumes at epoch 2 from last.pt and does only the rest.
    result = fit(config("train.epochs=4"), cache, folds, 0, tmp_path / "a")
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4] and result["epochs"] == 4


def test_time_budget_stops_cleanly(prepared, tmp_path):
    cache, folds = prepared
    result = fit(config("train.epochs=1000", "train.time_budget_min=0.02"), cache, folds, 0, tmp_path / "b")
    assert result["epochs"] < 1000
    state = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert state["epochs"] == result["epochs"] and (tmp_path / "b" / "config.yaml").is_file()


def test_resume_with_another_config_is_refused(prepared, tmp_path):
    cache, folds = prepared
    fit(config("train.epochs=1"), cache, folds, 0, tmp_path / "c")
    with pytest.raises(PipelineError, match=r"last\.pt: checkpoint was trained with a different 'model' config"):
        fit(config("train.epochs=2", "model.embedding_dim=32"), cache, folds, 0, tmp_path / "c")


def test_pk_batches_hold_k_photos_of_p_whales_and_repeat_per_epoch():
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    sampler = PKBatchSampler(labels, 4, 3, seed=1)
    sampler.set_epoch(2)
    batches = list(sampler)
    for batch in batches:
        counts = pd.Series(labels[[i for i, _, _ in batch]]).value_counts()
        assert len(counts) == 4 and (counts == 3).all()
    sampler.set_epoch(2)
    assert list(sampler) == batches
    sampler.set_epoch(3)
    assert list(sampler) != batches
    # Two DDP ranks split each global batch between them, seeds included.
    halves = [PKBatchSampler(labels, 4, 3, seed=1, rank=r, world=2) for r in (0, 1)]
    for h in halves:
        h.set_epoch(2)
    for whole, first, second in zip(batches, *halves):
        assert sorted(first + second) == sorted(whole)


def test_new_whale_share_adds_negatives_to_every_batch():
    labels = np.concatenate([np.repeat(np.arange(8), 4), np.full(20, -1)])
    sampler = PKBatchSampler(labels, 4, 2, seed=0, new_whale_share=0.2)
    for batch in sampler:
        batch_labels = labels[[i for i, _, _ in batch]]
        # 8 known photos, and 0.2 / 0.8 * 8 = 2 new_whale photos on top.
        assert (batch_labels == -1).sum() == 2 and len(batch_labels) == 10
        assert pd.Series(batch_labels[batch_labels >= 0]).value_counts().eq(2).all()
    assert PKBatchSampler(labels, 4, 2, seed=0).batch_size == 8  # share 0: known photos only


def test_hard_class_mining_gathers_look_alike_whales():
    labels = np.repeat(np.arange(8), 2)
    sampler = PKBatchSampler(labels, 4, 2, seed=0, hard_classes=True, hard_class_pool=2)
    # Whales 0-3 look alike (near one direction), 4-7 near another.
    rng = np.random.default_rng(0)
    centres = np.where(np.arange(8)[:, None] < 4, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]) + 0.05 * rng.normal(size=(8, 3))
    sampler.update_bank(centres[labels].astype(np.float32), labels)
    for batch in sampler:
        whales = set(labels[[i for i, _, _ in batch]] < 4)
        assert len(whales) == 1, "a batch mixes the two look-alike groups"
    random_batches = PKBatchSampler(labels, 4, 2, seed=0)
    assert any(len(set(labels[[i for i, _, _ in b]] < 4)) == 2 for b in random_batches)


def test_divide_and_conquer_batches_come_from_one_cluster():
    labels = np.repeat(np.arange(6), 3)
    sampler = PKBatchSampler(labels, 2, 2, seed=0, batches_per_epoch=6)
    sampler.groups = np.array([0, 1, 0, 1, 0, 1])
    for b, batch in enumerate(sampler):
        assert {g for _, _, g in batch} == {b % 2}
        assert set(labels[[i for i, _, _ in batch]] % 2) == {b % 2}


def test_flip_as_new_identity_doubles_identities():
    from pipeline.data.datasets import CachedPhotos, training_items

    rows, labels, flipped = training_items(np.array([0, 1, -1]), np.array([5, 6, 7]), 2, True)
    assert rows.tolist() == [5, 6, 7, 5, 6, 7] and labels.tolist() == [0, 1, -1, 2, 3, -1]
    assert flipped.tolist() == [False] * 3 + [True] * 3
    images = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(1, 2, 4, 3)
    ds = CachedPhotos(images, np.array([0, 0]), np.array([0, 2]), flipped=np.array([False, True]))
    assert torch.equal(ds[1][0], torch.flip(ds[0][0], dims=[2])) and ds[1][1].item() == 2


@pytest.mark.parametrize("extra", [
    ["sampler.new_whale_share=0.25", "sampler.flip_as_new_identity=true"],
    ["loss.name=npair", "sampler.hard_classes=true"],
    ["loss.name=triplet", "divide.clusters=2", "divide.every_epochs=1", "divide.finetune_share=0.4"],
])
def test_sampling_options_train_and_resume(prepared, tmp_path, extra, monkeypatch):
    import pipeline.training.fit as fit_module
    from pipeline.training.hooks import Checkpoint

    cache, folds = prepared
    a = fit(config("train.epochs=3", *extra), cache, folds, 0, tmp_path / "a")
    assert a["epochs"] == 3 and np.isfinite(a["final_loss"])

    class CrashAfterEpoch2(Checkpoint):
        def after_epoch(self, trainer):
            super().after_epoch(trainer)
            if trainer.epoch == 2:
                raise KeyboardInterrupt

    # Crashed after epoch 2 and resumed: the sampler's state (bank, clusters) comes back with it.
    monkeypatch.setattr(fit_module, "Checkpoint", CrashAfterEpoch2)
    with pytest.raises(KeyboardInterrupt):
        fit(config("train.epochs=3", *extra), cache, folds, 0, tmp_path / "b")
    monkeypatch.setattr(fit_module, "Checkpoint", Checkpoint)
    fit(config("train.epochs=3", *extra), cache, folds, 0, tmp_path / "b")
    wa = torch.load(tmp_path / "a" / "final.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "final.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
