"""Every registered loss builds from a config, gives a finite loss with gradients, and scores
well-separated embeddings lower than random ones (a loss that ignored labels would fail this)."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import DEFAULTS, load_config
from pipeline.errors import PipelineError
from pipeline.losses import LOSSES, build_loss

NAMES = sorted(LOSSES)


def batch(separated: bool, classes=6, per_class=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    if separated:
        centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1) * 4
        x = centres[labels] + 0.05 * torch.randn(len(labels), dim, generator=g)
    else:
        x = torch.randn(len(labels), dim, generator=g)
    return x.requires_grad_(True), labels


def fitted(loss, labels, dim=16, steps=60):
    """Class-weight losses need their centres to agree with the data: fit them briefly first."""
    x, _ = batch(True, dim=dim)
    params = list(loss.parameters())
    if params:
        opt = torch.optim.Adam(params, lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            value = loss(x.detach(), labels)
            if value.requires_grad:  # a miner may find nothing left to learn from
                value.backward()
                opt.step()
    return loss


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_with_gradients_and_rewards_separation(name):
    cfg = load_config([], [f"loss.name={name}", "loss.margin=0.2"])
    torch.manual_seed(0)
    loss = build_loss(cfg, num_classes=6, embedding_dim=16)
    x, labels = batch(False)
    value = loss(x, labels)
    assert torch.isfinite(value)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    loss = fitted(loss, labels)
    with torch.no_grad():
        good = loss(batch(True)[0], labels)
        bad = loss(batch(False, seed=1)[0], labels)
    assert good < bad, (name, float(good), float(bad))


def test_unknown_loss_and_miner_are_clear_errors():
    with pytest.raises(PipelineError, match="unknown loss 'arcfcae'"):
        build_loss(load_config([], ["loss.name=arcfcae"]), 3, 8)
    with pytest.raises(PipelineError, match="unknown miner 'hardest'"):
        build_loss(load_config([], ["loss.name=triplet", "loss.miner=hardest"]), 3, 8)


def test_registry_has_the_losses_of_the_field():
    assert {"arcface", "cosface", "sphereface", "subcenter_arcface", "normsoftmax", "triplet", "contrastive",
            "npair", "margin"} <= set(LOSSES)
    assert DEFAULTS["loss"]["name"] in LOSSES
