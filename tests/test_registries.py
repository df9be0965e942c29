"""The ensemble-method and pooling registries: an entry registered under a new name is found by the
stage and the config; an unknown name is the registry's error listing the known ones."""
import pytest
import torch

from pipeline.errors import PipelineError
from tests.conftest import REPO


def test_ensemble_methods_registry_orders_needs_and_lists_unknown_names():
    from pipeline.ensemble import methods as M

    assert M.run_order(["blend"]) == ["fusion", "classifier", "blend"]
    assert M.run_order(["fusion"]) == ["fusion"] and not M.reads_embeddings(["fusion"])
    assert M.reads_embeddings(["blend"])
    with pytest.raises(PipelineError, match=r"ensemble.methods: unknown ensemble method 'stacking'; "
                                            r"use one of blend, classifier, fusion"):
        M.run_order(["fusion", "stacking"])


def test_a_registered_ensemble_method_is_run_by_the_stage(monkeypatch):
    """A method registered under a new name runs when ensemble.methods names it, after what it needs."""
    from pipeline.ensemble import methods as M

    calls = []

    @M.METHODS.register("fusion_twice")
    class FusionTwice:
        needs, embeddings = ("fusion",), False

        @staticmethod
        def run(r):
            calls.append(sorted(r.results))
            return r.results["fusion"]

    try:
        state = M.Run(None, [], [], [], None, [], {})
        monkeypatch.setattr(M.Fusion, "run", staticmethod(lambda r: ("oof", "test")))
        M.run_methods(state, ["fusion_twice"])
        assert calls == [["fusion"]] and state.results["fusion_twice"] == ("oof", "test")
    finally:
        M.METHODS.pop("fusion_twice")


def test_a_registered_pool_is_built_from_the_config_and_unknown_pools_are_listed():
    from pipeline.config import load_stage_config
    from pipeline.models.net import build_model
    from pipeline.models.pooling import POOLS

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(-2, -1))

    @POOLS.register("mean")
    class MeanPool:
        @staticmethod
        def resolve(probe):
            return "mean"

        @staticmethod
        def module(spec):
            return Mean()

    try:
        torch.manual_seed(0)
        net = build_model(load_stage_config(REPO / "configs", "test_arcface",
                                            ["model.backbone=test_resnet", "model.pool=mean"]))
        assert net.spec["pool"] == "mean" and isinstance(net.pool, Mean)
        x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
        features = net.backbone.forward_features(net.input(x))
        assert torch.allclose(net.pooled(x), features.mean(dim=(-2, -1)))
    finally:
        POOLS.pop("mean")
    with pytest.raises(PipelineError, match=r"model.pool: unknown pool 'mean'; use one of auto, backbone, gem"):
        build_model(load_stage_config(REPO / "configs", "test_arcface", ["model.pool=mean"]))
