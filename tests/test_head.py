"""The head on frozen features (training/head.py): the standardisation folded into the neck is exact,
the head learns while the backbone stays as it was, the budget pays for it, a head-only run saves a
network that embeds like any other, and train.freeze_bn keeps the backbone's batch statistics."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.models.net import model_from_checkpoint
from pipeline.training.fit import fit
from pipeline.training.head import fold_standardisation
from pipeline.training.loop import keep_batch_norm_statistics
from tests.conftest import small_config


def config(*extra):
    return small_config("test_arcface", *extra)


def test_folding_the_standardisation_into_the_linear_layer_is_exact():
    torch.manual_seed(0)
    linear, x = nn.Linear(6, 3), torch.randn(10, 6) * 5 + 2
    mean, std = x.mean(0), x.std(0)
    expected = linear((x - mean) / std)
    fold_standardisation(linear, mean, std)
    assert torch.allclose(linear(x), expected, atol=1e-5)


def test_a_head_only_run_trains_the_neck_and_leaves_the_backbone(small_prepared, tmp_path):
    cache, folds = small_prepared
    cfg = config("train.epochs=0", "train.head_epochs=20", "train.head_batch_size=16", "train.head_lr=0.01")
    torch.manual_seed(int(cfg["seed"]))  # fit seeds the same way: the network it starts from
    result = fit(cfg, cache, folds, 0, tmp_path / "head")
    state = torch.load(tmp_path / "head" / "final.pt", weights_only=True)
    assert result["head_steps"] > 0 and state["head"]["head_epochs"] == 20 and state["steps"] == 0
    rows = cache.rows(folds[folds["Id"] != "new_whale"]["Image"])[:32]
    x = torch.from_numpy(np.asarray(cache.images[rows])).permute(0, 3, 1, 2)
    net = model_from_checkpoint(state).eval()
    # Untrained: the same config with no head, from the same seed.
    torch.manual_seed(int(cfg["seed"]))
    fit(config("train.epochs=0", "train.head_epochs=0", "model.neck=true"), cache, folds, 0, tmp_path / "none")
    before = torch.load(tmp_path / "none" / "final.pt", weights_only=True)
    backbone = {k: v for k, v in state["model"].items() if k.startswith("backbone.")}
    assert all(torch.equal(v, before["model"][k]) for k, v in backbone.items()), "the backbone changed"
    assert not torch.equal(state["model"]["neck.weight"], before["model"]["neck.weight"])
    # The head's loss came down from its first epoch's.
    one = fit(config("train.epochs=0", "train.head_epochs=1", "train.head_batch_size=16", "train.head_lr=0.01"),
              cache, folds, 0, tmp_path / "one")
    assert state["head"]["head_loss"] < 0.9 * one["head_loss"]
    assert net.embed(x).shape == (32, int(cfg["model"]["embedding_dim"]))


def test_the_head_comes_out_of_the_time_budget(small_prepared, tmp_path, monkeypatch):
    """A head that took 6 s of a 3 s budget leaves the network none: it stops after its first step."""
    import types

    import pipeline.training.fit as fit_module

    readings = [100.0, 106.0]  # the head's start and end
    monkeypatch.setattr(fit_module, "time", types.SimpleNamespace(monotonic=lambda: readings.pop(0)))
    cache, folds = small_prepared
    result = fit(config("train.epochs=1000", "train.head_epochs=1", "train.time_budget_min=0.05"), cache, folds, 0,
                 tmp_path / "budget")
    assert result["head_total_seconds"] == 6.0 and result["steps"] == 1
    monkeypatch.undo()
    unlimited = fit(config("train.epochs=1", "train.head_epochs=1"), cache, folds, 0, tmp_path / "free")
    assert unlimited["steps"] > 1


def test_freeze_bn_keeps_the_backbones_running_statistics():
    from pipeline.models.net import EmbeddingNet

    spec = {"backbone": "test_resnet", "architecture": "test_resnet", "backbone_args": {}, "img_size": None,
            "input_size": None, "mean": [0.5] * 3, "std": [0.5] * 3, "pool": "gem", "gem_p": 3.0, "dropout": 0.0,
            "neck": True, "neck_norm": "batch", "embedding_dim": 8, "centre": False, "feature_dim": None}
    import timm
    spec["feature_dim"] = timm.create_model("test_resnet", num_classes=0).num_features
    net = EmbeddingNet(spec)
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k and k.startswith("backbone.")}
    net.train()
    keep_batch_norm_statistics(net)
    net(torch.randint(0, 255, (4, 3, 32, 64), dtype=torch.uint8))
    after = net.state_dict()
    assert stats and all(torch.equal(v, after[k]) for k, v in stats.items())
    assert not torch.equal(after["bn.running_mean"], torch.zeros_like(after["bn.running_mean"])), \
        "the neck's norm should still learn its statistics"


def test_embed_from_shared_pooled_features_matches_the_network(small_prepared, tmp_path):
    """A head-only model's embeddings from the pooled features kept beside the cache are the network's own."""
    from pipeline.models.embedding import embed_pooled, embed_rows
    from pipeline.models.pooled_cache import pooled_features

    cache, folds = small_prepared
    cfg = config("train.epochs=0", "train.head_epochs=2", "train.head_batch_size=16")
    fit(cfg, cache, folds, 0, tmp_path / "m")
    net = model_from_checkpoint(torch.load(tmp_path / "m" / "final.pt", weights_only=True))
    rows = np.arange(min(20, len(cache.images)))
    pooled = pooled_features(net, cache, 8, torch.device("cpu"))
    assert list(cache.folder.glob("pooled/*.npy")), "the features are kept for the other folds"
    direct = embed_rows(net, cache.images, rows, 8, True, torch.device("cpu"))
    assert np.allclose(embed_pooled(net, pooled, rows, True), direct, atol=1e-5)


def test_identify_runs_a_shared_backbone_once_for_all_folds(small_prepared, tmp_path, monkeypatch):
    """Two folds of a head-only recipe (the same frozen backbone, their own heads): identify embeds a
    photo with one backbone pass per photo and mirror, and each fold's vectors are its network's own."""
    from pipeline.models.embedding import embed_rows
    from pipeline.models.pooled_cache import backbone_digest
    from pipeline.identify import Identifier, _FoldModel

    import timm

    cache, folds = small_prepared
    weights = tmp_path / "backbone.pth"  # one starting backbone for both folds, as pretrained weights are
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), weights)
    cfg = config("train.epochs=0", "train.head_epochs=2", "train.head_batch_size=16", f"model.weights=file:{weights}")
    nets = []
    for fold in (0, 1):
        fit(cfg, cache, folds, fold, tmp_path / f"f{fold}")
        nets.append(model_from_checkpoint(torch.load(tmp_path / f"f{fold}" / "final.pt", weights_only=True)).eval())
    assert backbone_digest(nets[0]) == backbone_digest(nets[1])
    identifier = Identifier.__new__(Identifier)
    identifier.device = torch.device("cpu")
    identifier.fold_models = {"m": [_FoldModel(net, None, cfg, fold, backbone_digest(net))
                                    for fold, net in enumerate(nets)]}
    photos = [np.asarray(cache.images[r]) for r in range(3)]
    passes = []
    for net in nets:
        real = net.pooled
        monkeypatch.setattr(net, "pooled", lambda x, real=real: (passes.append(len(x)), real(x))[1])
    vectors = identifier.embed(photos)
    assert passes == [3, 3]  # the photos and their mirrors, once, not once per fold
    monkeypatch.undo()
    for fold, net in enumerate(nets):
        direct = embed_rows(net, np.stack(photos), np.arange(3), 8, True, torch.device("cpu"))
        assert np.allclose(vectors[("m", fold)], direct, atol=1e-5)
    assert not np.allclose(vectors[("m", 0)], vectors[("m", 1)])
