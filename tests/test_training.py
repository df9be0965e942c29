"""Training: resume continues where it stopped, the time budget stops cleanly, a foreign checkpoint is refused;
snapshot ensembling (train.snapshots): the cyclic learning rate by hand, one snapshot kept per cycle, the
checkpoint's network embeds as the mean of its snapshots' cosines, and a resumed run keeps its snapshots."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.samplers import PKBatchSampler
from pipeline.errors import PipelineError
from pipeline.models.net import EmbeddingNet, SnapshotEnsemble, model_from_checkpoint
from pipeline.training.fit import fit
from pipeline.training.loop import lr_factor
from tests.conftest import small_config


def config(*extra):
    return small_config("test_arcface", *extra)


def test_resume_continues_and_matches_an_uninterrupted_run(small_prepared, tmp_path):
    cache, folds = small_prepared
    fit(config("train.epochs=2"), cache, folds, 0, tmp_path / "a")
    # Same run asked for 4 epochs: resumes at epoch 2 from last.pt and does only the rest.
    result = fit(config("train.epochs=4"), cache, folds, 0, tmp_path / "a")
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4] and result["epochs"] == 4


def test_time_budget_stops_cleanly(small_prepared, tmp_path):
    cache, folds = small_prepared
    result = fit(config("train.epochs=1000", "train.time_budget_min=0.02"), cache, folds, 0, tmp_path / "b")
    assert result["epochs"] < 1000
    state = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert state["epochs"] == result["epochs"] and (tmp_path / "b" / "config.yaml").is_file()


def test_resume_with_another_config_is_refused(small_prepared, tmp_path):
    cache, folds = small_prepared
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
def test_sampling_options_train_and_resume(small_prepared, tmp_path, extra, monkeypatch):
    import pipeline.training.fit as fit_module
    from pipeline.training.hooks import Checkpoint

    cache, folds = small_prepared
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


def cosine(t):
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def test_one_cycle_is_the_plain_schedule():
    for p in (0.0, 0.05, 0.1, 0.3, 0.7, 1.0, 1.3):
        expected = 0.1 + 0.9 * p / 0.1 if p < 0.1 else cosine(min(1.0, (p - 0.1) / 0.9))
        assert lr_factor(p, 0.1) == pytest.approx(expected)
        assert lr_factor(p, 0.1, cycles=1) == pytest.approx(expected)


def test_three_cycles_restart_at_the_full_rate():
    third = 1 / 3
    assert lr_factor(0.0, 0.0, 3) == pytest.approx(1.0)
    assert lr_factor(third / 2, 0.0, 3) == pytest.approx(cosine(0.5))
    assert lr_factor(third - 1e-9, 0.0, 3) == pytest.approx(0.01, abs=1e-6)  # a cycle ends at the floor
    assert lr_factor(third, 0.0, 3) == pytest.approx(1.0)  # and the next restarts
    assert lr_factor(third + third / 4, 0.0, 3) == pytest.approx(cosine(0.25))
    assert lr_factor(1.0, 0.0, 3) == pytest.approx(0.01)
    # Warm-up belongs to the first cycle: that cycle's cosine spans what is left of it.
    assert lr_factor(0.05, 0.1, 3) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(0.1 + (third - 0.1) / 2, 0.1, 3) == pytest.approx(cosine(0.5))


def test_a_snapshot_per_cycle_and_the_network_averages_their_cosines(small_prepared, tmp_path):
    cache, folds = small_prepared
    fit(config("train.epochs=3", "train.snapshots=3"), cache, folds, 0, tmp_path / "m")
    state = torch.load(tmp_path / "m" / "final.pt", weights_only=True)
    assert len(state["snapshots"]) == 2  # the ends of cycles 1 and 2; the final weights end cycle 3
    first = next(iter(state["model"]))
    assert not torch.equal(state["snapshots"][0][first], state["model"][first])
    assert not torch.equal(state["snapshots"][0][first], state["snapshots"][1][first])
    net = model_from_checkpoint(state).eval()
    assert isinstance(net, SnapshotEnsemble) and net.embedding_dim == 3 * state["network"]["embedding_dim"]
    # By hand: each snapshot as its own network, their cosines averaged.
    singles = []
    for weights in [*state["snapshots"], state["model"]]:
        single = EmbeddingNet.from_spec(state["network"])
        single.load_state_dict(weights)
        singles.append(single.eval())
    x = torch.from_numpy(np.array(cache.images[:6])).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        e = net(x)
        by_hand = np.mean([(F.normalize(s(x), dim=1) @ F.normalize(s(x), dim=1).T).numpy() for s in singles], axis=0)
    assert torch.allclose(e.norm(dim=1), torch.ones(6), atol=1e-5)
    assert np.allclose((e @ e.T).numpy(), by_hand, atol=1e-5)
    # Resuming trains the current weights alone.
    assert isinstance(model_from_checkpoint(state, snapshots=False), EmbeddingNet)


def test_a_resumed_run_keeps_its_snapshots(small_prepared, tmp_path):
    cache, folds = small_prepared
    # A 2-epoch run in 2 cycles keeps its snapshot after epoch 1; asked for 4 epochs, the same run
    # resumes from last.pt at epoch 2, where the snapshot it carries is the only one it needs.
    fit(config("train.epochs=2", "train.snapshots=2"), cache, folds, 0, tmp_path / "r")
    kept = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["snapshots"]
    assert len(kept) == 1
    fit(config("train.epochs=4", "train.snapshots=2"), cache, folds, 0, tmp_path / "r")
    assert list(pd.read_csv(tmp_path / "r" / "log.csv")["epoch"]) == [1, 2, 3, 4]
    final = torch.load(tmp_path / "r" / "final.pt", weights_only=True)
    assert len(final["snapshots"]) == 1
    assert all(torch.equal(final["snapshots"][0][k], v) for k, v in kept[0].items())


def test_snapshots_below_one_are_refused(small_prepared, tmp_path):
    cache, folds = small_prepared
    with pytest.raises(PipelineError, match="train.snapshots"):
        fit(config("train.epochs=1", "train.snapshots=0"), cache, folds, 0, tmp_path / "z")
