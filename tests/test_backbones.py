"""Every timm backbone (CNN, ViT, Swin), pretrained starts from a local file, the zero-shot recipe, and
checkpoints that never need the pretrained weights again. Random weights throughout: nothing is
downloaded."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.models.net import build_model, model_from_checkpoint
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
         "sampler.photos_per_class=2", "train.epochs=1"]
# A Swin (MegaDescriptor's architecture family) small enough for CPU seconds, built through timm.
TINY_SWIN = ["model.backbone=swin_tiny_patch4_window7_224",
             "model.backbone_args={embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1]}"]
TINY_SWIN_ARGS = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))


def args(sets):
    return [x for s in sets for x in ("--set", s)]


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("backbones")
    folds_file = work / "folds.csv"
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *args(SMALL)]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(folds_file), *args(SMALL)]) == 0
    return work, folds_file


def stage(name, work, folds_file, model, sets, *extra):
    return main([name, "--work", str(work), "--configs", str(REPO / "configs"), "--model", model,
                 "--folds-file", str(folds_file), *args(sets), *extra])


def embeddings(work, model, fold=0):
    folder = work / "embeddings" / model / f"fold{fold}"
    index = pd.read_csv(folder / "index.csv")
    return index, np.load(folder / "train.npy"), np.load(folder / "test.npy")


@pytest.mark.parametrize("backbone", [["model.backbone=test_vit"], TINY_SWIN], ids=["vit", "swin"])
def test_transformers_train_embed_and_resume_through_the_stages(prepared, backbone, tmp_path):
    work, folds_file = prepared
    sets = SMALL + backbone
    model = "test_arcface"
    assert stage("train", work, folds_file, model, sets, "--folds", "0", "--restart") == 0
    fold0 = work / "models" / model / "fold0"
    first = torch.load(fold0 / "final.pt", weights_only=True)
    # A transformer's output is tokens (ViT) or a channels-last map (Swin): pooled by its own head.
    assert first["network"]["pool"] == "backbone"
    assert first["network"]["input_size"] == list(timm.models.get_pretrained_cfg(
        backbone[0].split("=")[1]).input_size[1:])
    # Resume: the same recipe asked for one more epoch continues from last.pt.
    assert stage("train", work, folds_file, model, sets + ["train.epochs=2"], "--folds", "0") == 0
    log = pd.read_csv(fold0 / "log.csv")
    assert list(log["epoch"]) == [1, 2]
    assert stage("embed", work, folds_file, model, sets + ["train.epochs=2"], "--folds", "0", "--force") == 0
    _, train, test = embeddings(work, model)
    dim = torch.load(fold0 / "final.pt", weights_only=True)["network"]["embedding_dim"]
    assert train.shape[1] == 2 * dim and np.isfinite(train).all()  # flip TTA: [e, e_flip] / sqrt(2)
    assert np.allclose(np.linalg.norm(test, axis=1), 1, atol=1e-5)


def test_pooling_follows_the_backbones_output_layout():
    from pipeline.config import load_stage_config

    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    for backbone, expected in [("test_resnet", "gem"), ("test_convnext", "backbone"), ("test_vit", "backbone")]:
        torch.manual_seed(0)
        net = build_model(load_stage_config(REPO / "configs", "test_arcface", [f"model.backbone={backbone}"]))
        assert net.spec["pool"] == expected, backbone
        features = net.backbone.forward_features(net.input(x))
        own = net.backbone.forward_head(features, pre_logits=True)
        if expected == "backbone":
            # ConvNeXt's LayerNorm sits in its head: its pooled features keep their negative values.
            assert torch.equal(net.pooled(x), own)
            assert (own < 0).any()
        else:
            assert torch.allclose(net.pooled(x), net.pool(features)) and features.min() >= 0
    with pytest.raises(PipelineError, match="model.pool: .*GeM needs a plain"):
        build_model(load_stage_config(REPO / "configs", "test_arcface", ["model.backbone=test_vit", "model.pool=gem"]))


@pytest.fixture
def swin_weights(tmp_path):
    """A random Swin saved the way a hub download is: timm's layout, with a classifier the pipeline drops."""
    torch.manual_seed(7)
    source = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, **TINY_SWIN_ARGS)
    path = tmp_path / "megadescriptor-tiny.pth"
    torch.save(source.state_dict(), path)
    return path, {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}


def zero_shot_sets(path):
    # The MegaDescriptor recipes pin 384 x 384; a window-7 Swin takes its own 224, as -B/-S/-T-224 users set.
    return SMALL[:-1] + TINY_SWIN + ["model.input_size=[224,224]", "model.pretrained=false",
                                     f"model.pretrained_path={path}"]


def test_offline_weights_file_loads_every_tensor(swin_weights):
    from pipeline.config import load_stage_config

    path, saved = swin_weights
    cfg = load_stage_config(REPO / "configs", "megadescriptor_zero_shot", zero_shot_sets(path))
    net = build_model(cfg)
    own = net.backbone.state_dict()
    for key, tensor in saved.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue  # buffers timm rebuilds, not weights
        assert torch.equal(own[key], tensor), key
    assert not net.spec["neck"] and net.embedding_dim == net.spec["feature_dim"]


def test_weights_of_another_architecture_are_refused(tmp_path):
    from pipeline.config import load_stage_config

    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    cfg = load_stage_config(REPO / "configs", "megadescriptor_zero_shot", zero_shot_sets(path))
    with pytest.raises(PipelineError, match=r"resnet\.pth: .* tensors are not in the file"):
        build_model(cfg)


def test_zero_shot_embeddings_are_the_backbones_pooled_features(prepared, swin_weights):
    work, folds_file = prepared
    path, saved = swin_weights
    model, sets = "megadescriptor_zero_shot", zero_shot_sets(path)
    assert stage("train", work, folds_file, model, sets, "--folds", "0") == 0
    state = torch.load(work / "models" / model / "fold0" / "final.pt", weights_only=True)
    assert state["epochs"] == 0 and state["steps"] == 0  # saved, not trained
    assert stage("embed", work, folds_file, model, sets, "--folds", "0") == 0
    index, train, _ = embeddings(work, model)

    # The reference, computed with timm alone: the file's weights, timm's input size, and MegaDescriptor's
    # own normalisation (mean = std = 0.5), which the recipe pins.
    reference = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, **TINY_SWIN_ARGS).eval()
    reference.load_state_dict(saved, strict=False)
    data_cfg = {**timm.data.resolve_data_config({}, model=reference), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    from pipeline.data.cache import ImageCache

    cache = ImageCache.open(work)
    names = index[index["split"] == "train"]["Image"].to_numpy()[:6]
    x = torch.from_numpy(np.asarray(cache.images[cache.rows(names)])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=data_cfg["input_size"][1:], mode="bilinear", antialias=True) / 255
    x = (x - torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        plain = F.normalize(reference(x), dim=1)
        flipped = F.normalize(reference(torch.flip(x, dims=[3])), dim=1)
    expected = torch.cat([plain, flipped], dim=1).numpy() / np.sqrt(2)
    rows = index[index["split"] == "train"].reset_index(drop=True).set_index("Image").loc[names, "row"].to_numpy()
    np.testing.assert_allclose(train[rows], expected, atol=2e-5)


def test_a_trained_model_never_reads_the_pretrained_weights_again(prepared, swin_weights, monkeypatch, capsys):
    work, folds_file = prepared
    path, _ = swin_weights
    model, sets = "megadescriptor_finetune", zero_shot_sets(path) + ["train.epochs=1", "train.workers=0"]
    assert stage("train", work, folds_file, model, sets) == 0
    path.unlink()  # the user's download is gone; so is the hub (any attempt to fetch fails loudly)
    monkeypatch.setattr(timm.models._builder, "load_pretrained",
                        lambda *a, **k: pytest.fail("pretrained weights were loaded again"))
    assert stage("embed", work, folds_file, model, sets) == 0
    assert stage("knn", work, folds_file, model, sets) == 0
    data = json.loads((work / "cache" / "preprocess.json").read_text())["data"]
    query = sorted((Path(data) / "test").glob("*.jpg"))[0]
    capsys.readouterr()
    assert main(["identify", str(query), "--work", str(work), "--models", model, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["results"][0]["top5"]) == 5


def test_resume_rebuilds_the_network_from_the_checkpoint(prepared, swin_weights):
    work, folds_file = prepared
    path, _ = swin_weights
    sets = zero_shot_sets(path) + ["train.epochs=1", "train.workers=0"]
    model = "megadescriptor_finetune"
    assert stage("train", work, folds_file, model, sets, "--folds", "1", "--restart") == 0
    path.unlink()  # a resumed run does not need the file either
    assert stage("train", work, folds_file, model, sets[:-2] + ["train.epochs=2", "train.workers=0"],
                 "--folds", "1") == 0
    assert list(pd.read_csv(work / "models" / model / "fold1" / "log.csv")["epoch"]) == [1, 2]


def test_checkpoints_written_before_network_specs_still_load(prepared):
    """An old final.pt (no 'network' entry): GeM and ImageNet normalisation, as it was trained."""
    from pipeline.config import load_stage_config

    cfg = load_stage_config(REPO / "configs", "test_arcface", ["model.backbone=test_resnet"])
    torch.manual_seed(0)
    net = build_model(cfg)
    old = {"model": net.state_dict(), "config": cfg}
    rebuilt = model_from_checkpoint(old)
    assert rebuilt.spec["pool"] == "gem" and rebuilt.spec["mean"] == [0.485, 0.456, 0.406]
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), rebuilt.state_dict().values()))
