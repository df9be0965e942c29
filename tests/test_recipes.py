"""Every recipe under configs/models loads, names a registered loss, says when to use it, and trains."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_stage_config
from pipeline.losses import LOSSES
from pipeline.training.fit import fit
from tests.conftest import REPO

RECIPES = sorted(p.stem for p in (REPO / "configs" / "models").glob("*.yaml"))
# Training-free backbones have nothing to train: tests/test_colour_histogram.py runs their recipe.
TRAINING_FREE = {"colour_histogram", "training_free"}


def test_the_training_free_recipe_is_the_histogram_shortlist_with_verified_local_matches():
    cfg = load_stage_config(REPO / "configs", "training_free")
    histogram = load_stage_config(REPO / "configs", "colour_histogram")
    assert cfg["model"] == histogram["model"] and cfg["train"]["epochs"] == 0
    assert cfg["knn"]["local"] and cfg["knn"]["local_geometry"] == "homography"


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    from pipeline.cli import main
    from pipeline.data.cache import ImageCache
    from pipeline.data.folds import read_folds

    work = tmp_path_factory.mktemp("recipes")
    sets = ["--set", "preprocess.image_size=[32,64]", "--set", "folds.n_folds=3"]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return ImageCache.open(work), read_folds(work / "folds.csv")


@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - TRAINING_FREE))
def test_recipe_trains_a_few_steps(recipe, prepared, tmp_path):
    text = (REPO / "configs" / "models" / f"{recipe}.yaml").read_text()
    assert text.startswith("# ") and len(text.split("\n", 1)[0]) > 30, "a recipe opens with when to use it"
    cfg = load_stage_config(REPO / "configs", recipe,
                            ["model.backbone=test_resnet", "model.pretrained=false", "model.weights=null", "train.workers=0",
                             "preprocess.image_size=[32,64]", "train.epochs=1",
                             "folds.n_folds=3"])
    names = [t["name"] for t in cfg["loss"]["terms"]] if cfg["loss"]["name"] == "sum" else [cfg["loss"]["name"]]
    assert set(names) <= set(LOSSES)
    cache, folds = prepared
    result = fit(cfg, cache, folds, 0, tmp_path / recipe)
    assert result["epochs"] == 1 and np.isfinite(result["final_loss"])
    assert Path(tmp_path / recipe / "final.pt").is_file()
