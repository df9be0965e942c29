"""Snapshot ensembling (train.snapshots): the cyclic learning rate by hand, one snapshot kept per cycle,
the checkpoint's network embeds as the mean of its snapshots' cosines, and a resumed run keeps the
snapshots it had."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.cli import main
from pipeline.config import load_stage_config
from pipeline.data.cache import ImageCache
from pipeline.data.folds import read_folds
from pipeline.errors import PipelineError
from pipeline.models.net import EmbeddingNet, SnapshotEnsemble, model_from_checkpoint
from pipeline.training.fit import fit
from pipeline.training.loop import lr_factor
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
         "sampler.photos_per_class=2", "train.warmup_epochs=0"]


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


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("snapshots")
    sets = [x for s in SMALL for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return ImageCache.open(work), read_folds(work / "folds.csv")


def config(*extra):
    return load_stage_config(REPO / "configs", "demo_triplet", [*SMALL, *extra])


def test_a_snapshot_per_cycle_and_the_network_averages_their_cosines(prepared, tmp_path):
    cache, folds = prepared
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


def test_a_resumed_run_keeps_its_snapshots(prepared, tmp_path):
    cache, folds = prepared
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


def test_snapshots_below_one_are_refused(prepared, tmp_path):
    cache, folds = prepared
    with pytest.raises(PipelineError, match="train.snapshots"):
        fit(config("train.epochs=1", "train.snapshots=0"), cache, folds, 0, tmp_path / "z")
