import pytest

from pipeline.config import DEFAULTS, load_config, load_stage_config
from pipeline.errors import PipelineError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("train:\n  lr: 0.5\n")
    cfg = load_config([path], ["train.epochs=7", "model.backbone=test_resnet"])
    assert cfg["train"]["lr"] == 0.5 and cfg["train"]["epochs"] == 7
    assert cfg["model"]["backbone"] == "test_resnet"
    assert cfg["loss"] == DEFAULTS["loss"]


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("train:\n  learning_rate: 0.5\n")
    with pytest.raises(PipelineError, match=r"m\.yaml: unknown config key 'train\.learning_rate'"):
        load_config([path])


def test_unknown_override_key():
    with pytest.raises(PipelineError, match=r"unknown config key 'trian'"):
        load_config([], ["trian.lr=1"])


def test_every_shipped_model_config_loads():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    names = [p.stem for p in (configs / "models").glob("*.yaml")]
    assert names
    for name in names:
        assert load_stage_config(configs, name)["name"] == name


def test_makefile_default_model_is_the_configured_default():
    import re

    from pipeline.config import DEFAULT_MODEL
    from tests.conftest import REPO

    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^MODEL \?= (\S+)$", makefile, re.M).group(1) == DEFAULT_MODEL
    assert (REPO / "configs" / "models" / f"{DEFAULT_MODEL}.yaml").is_file()


def test_a_checkpoint_written_before_a_setting_was_removed_still_loads(tmp_path):
    """A config key that a later version removed (the verification head's old knn.verify_positives)
    is dropped on load, not refused; keys added since take their defaults; unknown keys of a user's
    library mapping stay."""
    import torch

    from pipeline.config import DEFAULTS
    from pipeline.training.checkpoint import load_checkpoint

    old = {"knn": {"verify_positives": 5, "neighbours": 7}, "model": {"backbone_args": {"drop_path_rate": 0.1}}}
    torch.save({"model": {}, "config": old}, tmp_path / "final.pt")
    cfg = load_checkpoint(tmp_path / "final.pt")["config"]
    assert "verify_positives" not in cfg["knn"] and cfg["knn"]["neighbours"] == 7
    assert cfg["knn"]["verify_features"] == DEFAULTS["knn"]["verify_features"]
    assert cfg["model"]["backbone_args"] == {"drop_path_rate": 0.1}
