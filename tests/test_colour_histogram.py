"""The training-free colour-histogram backbone: its HSV conversion against the standard library's, its
pyramid histogram recomputed by hand, and the recipe through train (nothing trained), embed and knn."""
import colorsys

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from pipeline.cli import main
from pipeline.config import load_stage_config
from pipeline.models.colour_histogram import ColourHistogram, rgb_to_hsv
from pipeline.models.net import build_model
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3"]


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    """A preprocessed work folder and folds file: (work, folds file, the stages' common arguments)."""
    root = tmp_path_factory.mktemp("colour")
    work, folds_file = root / "work", root / "folds.csv"
    sets = [x for s in SMALL for x in ("--set", s)]
    common = ["--work", str(work), "--configs", str(REPO / "configs"), "--folds-file", str(folds_file), *sets]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", *common]) == 0
    return work, folds_file, common


def test_hsv_matches_the_standard_library():
    rgb = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, 0] = torch.tensor([0.3, 0.3, 0.3])  # grey: no hue, no saturation
    rgb[0, :, 0, 1] = 0.0  # black
    ours = rgb_to_hsv(rgb)[0].permute(1, 2, 0).reshape(-1, 3).numpy()
    theirs = np.array([colorsys.rgb_to_hsv(*p) for p in rgb[0].permute(1, 2, 0).reshape(-1, 3).tolist()])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_the_pyramid_histogram_recomputed_by_hand():
    # Left half pure red, right half pure blue, 4 x 8 pixels; 2 bins per channel.
    x = torch.zeros(1, 3, 4, 8)
    x[0, 0, :, :4] = 1.0
    x[0, 2, :, 4:] = 1.0
    net = ColourHistogram(bins=2, levels=(1, 2))
    features = net.forward_features(x)[0].numpy()
    assert features.shape == (1 * 8 + 4 * 8,) and net.num_features == 40
    red = (0 * 2 + 1) * 2 + 1  # hue 0 -> bin 0, saturation 1 -> bin 1, value 1 -> bin 1
    blue = (1 * 2 + 1) * 2 + 1  # hue 2/3 -> bin 1
    level1 = np.zeros(8)
    level1[[red, blue]] = np.sqrt(0.5)  # half the pixels each, square-rooted; already unit length
    level2 = np.zeros((4, 8))  # cells: top-left, top-right, bottom-left, bottom-right
    level2[[0, 2], red] = 1.0
    level2[[1, 3], blue] = 1.0
    level2 = level2.ravel() / np.linalg.norm(level2)
    expected = np.concatenate([level1, level2]) / np.sqrt(2)  # each level weighs the same
    np.testing.assert_allclose(features, expected, atol=1e-6)
    # Mirroring swaps the level-2 cells and leaves the level-1 histogram alone.
    mirrored = net.forward_features(torch.flip(x, dims=[3]))[0].numpy()
    np.testing.assert_allclose(mirrored[:8], expected[:8], atol=1e-6)
    assert not np.allclose(mirrored, expected)


def test_timm_builds_it_and_the_recipe_has_nothing_to_train():
    assert "colour_histogram" in timm.list_models("colour_*")
    cfg = load_stage_config(REPO / "configs", "colour_histogram")
    net = build_model(cfg, cache_hw=(32, 64))
    assert sum(p.numel() for p in net.parameters()) == 0
    assert net.spec["pool"] == "backbone" and net.embedding_dim == 8 ** 3 * 5
    x = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)
    # The input adapter hands it RGB on 0..1 (mean 0, std 1), so it sees the cache's own colours.
    np.testing.assert_allclose(net.input(x).numpy(), x.float().numpy() / 255, atol=1e-6)
    np.testing.assert_allclose(net(x).numpy(), net.backbone.forward_features(net.input(x)).numpy())


def test_pretrained_weights_are_refused_by_name():
    with pytest.raises(ValueError, match="colour_histogram has no weights"):
        timm.create_model("colour_histogram", pretrained=True)


def test_the_recipe_runs_through_train_embed_and_knn(prepared):
    work, folds_file, common = prepared
    for stage in ("train", "embed", "knn"):
        assert main([stage, *common, "--model", "colour_histogram", "--folds", "0", "--set", "knn.local=false"]) == 0
    state = torch.load(work / "models" / "colour_histogram" / "fold0" / "final.pt", weights_only=True)
    assert state["epochs"] == 0 and set(state["model"]) == {"centre"}  # no weights: only the fitted mean
    # The centre, recomputed by hand: the mean histogram of fold 0's training photos and their mirrors.
    from pipeline.data.cache import ImageCache
    from pipeline.data.folds import read_folds
    from pipeline.training.fit import training_photos

    cfg = load_stage_config(REPO / "configs", "colour_histogram", SMALL)
    photos = training_photos(read_folds(folds_file), 0, new_whale=float(cfg["sampler"]["new_whale_share"]) > 0)
    cache = ImageCache.open(work)
    x = torch.from_numpy(np.asarray(cache.images[cache.rows(photos["Image"])])).permute(0, 3, 1, 2)
    x = build_model(cfg).input(x)  # the cache's pixels on 0..1, in the network's own arithmetic
    net = ColourHistogram(bins=8, levels=(1, 2))
    expected = torch.cat([net.forward_features(x), net.forward_features(torch.flip(x, dims=[3]))]).mean(0)
    np.testing.assert_allclose(state["model"]["centre"].numpy(), expected.numpy(), atol=1e-5)
    folder = work / "embeddings" / "colour_histogram" / "fold0"
    train = np.load(folder / "train.npy")
    assert train.shape[1] == 2 * 8 ** 3 * 5  # [e(x), e(flip x)] with flip TTA
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1.0, atol=1e-5)
    scores = pd.read_parquet(next((work / "predictions" / "colour_histogram").glob("oof*")))
    assert len(scores) and scores["score"].between(-1.0001, 1.0001).all()


def test_a_centre_on_a_trained_model_is_refused_by_name(prepared, capsys):
    work, folds_file, common = prepared
    assert main(["train", *common, "--model", "test_arcface", "--folds", "0", "--set", "model.centre=true"]) != 0
    assert "model.centre" in capsys.readouterr().err
    assert not (work / "models" / "test_arcface" / "fold0" / "final.pt").exists()
