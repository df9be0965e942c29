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
    assert {"arcface", "cosface", "sphereface", "lsoftmax", "subcenter_arcface", "normsoftmax", "normface",
            "triplet", "contrastive", "npair", "margin"} <= set(LOSSES)
    assert DEFAULTS["loss"]["name"] in LOSSES


# ------------------------------------------------------------------ our own losses, against hand values

def unit(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_coupled_clusters_matches_hand_computation():
    from pipeline.losses.coupled_clusters import CoupledClustersLoss

    # Class 0 = {(1,0), (0,1)} (centre (.5,.5)); class 1 = {(.6,.8)}. Squared distances to the centre:
    # positives 0.5 each, the negative 0.01 + 0.09 = 0.1 -> 0.5 * (0.5 + 0.2 - 0.1) = 0.3 per positive.
    # Class 1's nearest negative is (0,1) at 0.36 + 0.04 = 0.4 -> 0.5 * max(0, 0 + 0.2 - 0.4) = 0.
    x = torch.stack([unit(2, 0), unit(0, 3), unit(0.6, 0.8)])  # scale is irrelevant: normalised first
    loss = CoupledClustersLoss(margin=0.2)
    assert loss(x, torch.tensor([0, 0, 1])).item() == pytest.approx((0.3 + 0.3 + 0) / 3, abs=1e-6)
    # The same photo as new_whale: still class 0's nearest negative, but no cluster of its own.
    assert loss(x, torch.tensor([0, 0, -1])).item() == pytest.approx(0.3, abs=1e-6)


def test_dynamic_margins_shrink_with_class_size():
    from pipeline.losses.dynamic_subcenter import dynamic_margins

    # n^-1/4 of 1, 16, 81 is 1, 1/2, 1/3: rescaled onto [0.1, 0.5] -> 0.5, 0.2, 0.1.
    assert dynamic_margins([1, 16, 81], 0.1, 0.5, 0.25) == pytest.approx([0.5, 0.2, 0.1])
    assert dynamic_margins([5, 5], 0.1, 0.5, 0.25) == pytest.approx([0.5, 0.5])


def test_dynamic_subcenter_arcface_matches_hand_computation():
    import math

    from pipeline.losses.dynamic_subcenter import DynamicSubCenterArcFace

    loss = DynamicSubCenterArcFace(2, 2, margins=[0.4, 0.1], scale=10.0, sub_centers=2)
    with torch.no_grad():  # rows: class 0 sub-centres, then class 1's
        loss.weight.copy_(torch.stack([unit(0, -1), unit(1, 0), unit(0, 1), unit(0, 1)]))
    # x at angle 0.3 from (1,0): class 0's best sub-centre is (1,0) (cos 0.3 beats -sin 0.3); class 1 at
    # angle pi/2 - 0.3. The target logit gets class 0's margin 0.4.
    x = unit(math.cos(0.3), math.sin(0.3))[None]
    target, other = 10 * math.cos(0.3 + 0.4), 10 * math.sin(0.3)
    expected = -target + math.log(math.exp(target) + math.exp(other))
    assert loss(x, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # As class 1 with margin 0.1: theta = pi/2 - 0.3.
    target1, other1 = 10 * math.cos(math.pi / 2 - 0.3 + 0.1), 10 * math.cos(0.3)
    expected1 = -target1 + math.log(math.exp(target1) + math.exp(other1))
    assert loss(x, torch.tensor([1])).item() == pytest.approx(expected1, rel=1e-5)


def test_bce_over_hardest_classes_matches_hand_computation():
    import math

    from pipeline.losses.bce_hardest import HardestClassesBCE

    loss = HardestClassesBCE(3, 3, hard_classes=1, scale=1.0)
    with torch.no_grad():
        loss.weight.copy_(torch.eye(3))
    x = torch.stack([unit(0.6, 0.8, 0), unit(0, 0, 1)])
    bce_pos = lambda z: math.log1p(math.exp(-z))  # noqa: E731
    bce_neg = lambda z: math.log1p(math.exp(z))  # noqa: E731
    # Photo 0 (class 0): its own logit 0.6, hardest other class 1 at 0.8. Photo 1 (new_whale): no own
    # class; hardest class 2 at 1.0 with target 0.
    expected = (bce_pos(0.6) + bce_neg(0.8) + bce_neg(1.0)) / 3
    assert loss(x, torch.tensor([0, -1])).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_sum_of_losses_is_one_config():
    cfg = load_config([], ["loss.name=sum",
                           "loss.terms=[{name: bce_hardest, weight: 2.0}, {name: triplet, weight: 0.5, margin: 0.3}]"])
    loss = build_loss(cfg, 6, 16)
    x, labels = batch(False)
    terms = loss.terms
    assert [t.loss.__class__.__name__ for t in terms] == ["HardestClassesBCE", "MinedLoss"]
    assert terms[1].loss.loss.margin == 0.3
    expected = 2.0 * terms[0](x, labels) + 0.5 * terms[1](x, labels)
    assert loss(x, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(PipelineError, match="unknown key 'marign' in loss term 0"):
        build_loss(load_config([], ["loss.name=sum", "loss.terms=[{name: triplet, marign: 1}]"]), 6, 16)
    with pytest.raises(PipelineError, match="needs loss.terms"):
        build_loss(load_config([], ["loss.name=sum"]), 6, 16)


def test_new_whale_is_a_negative_only():
    from pipeline.losses import unique_negatives

    assert unique_negatives(torch.tensor([0, -1, 1, -1])).tolist() == [0, 2, 1, 3]
    # Class-weight losses drop new_whale rows: the loss is the loss of the known rows alone.
    torch.manual_seed(0)
    loss = build_loss(load_config([], ["loss.name=arcface"]), 6, 16)
    x, labels = batch(False)
    with_unknown = torch.cat([labels[:-4], torch.full((4,), -1)])
    assert loss(x, with_unknown).item() == pytest.approx(loss(x[:-4], labels[:-4]).item(), rel=1e-6)
    # A triplet batch of two new_whale photos and one known photo has no positive pair: nothing to learn.
    triplet = build_loss(load_config([], ["loss.name=triplet", "loss.miner=all"]), 6, 16)
    assert not triplet(x[:3], torch.tensor([-1, -1, 0])).requires_grad or \
        triplet(x[:3], torch.tensor([-1, -1, 0])).item() == 0


def test_divide_and_conquer_trains_one_slice_per_batch():
    cfg = load_config([], ["loss.name=triplet", "loss.miner=all", "divide.clusters=2"])
    loss = build_loss(cfg, 6, 16)
    x, labels = batch(False)
    value = loss(x, labels, torch.full((len(labels),), 1))
    value.backward()
    assert x.grad[:, :8].abs().sum() == 0 and x.grad[:, 8:].abs().sum() > 0
    x.grad = None
    loss(x, labels, torch.full((len(labels),), -1)).backward()  # fine-tuning: the whole embedding
    assert x.grad[:, :8].abs().sum() > 0
    with pytest.raises(PipelineError, match="does not split into 3"):
        build_loss(load_config([], ["divide.clusters=3"]), 6, 16)


def test_normface_learns_its_scale_and_matches_hand_computation():
    import math

    cfg = load_config([], ["loss.name=normface", "loss.scale=5.0"])
    loss = build_loss(cfg, num_classes=2, embedding_dim=2)
    inner = loss.loss  # inside the new_whale wrapper
    with torch.no_grad():
        inner.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # normalised: e1, e2
    x = torch.tensor([[3.0, 4.0]])  # cos to class 0: 0.6, to class 1: 0.8
    value = loss(x, torch.tensor([0]))
    p0 = math.exp(5 * 0.6) / (math.exp(5 * 0.6) + math.exp(5 * 0.8))
    assert float(value.detach()) == pytest.approx(-math.log(p0), rel=1e-5)
    value.backward()
    # d loss / d s = sum_c p_c cos_c - cos_target: the scale is a parameter that learns.
    assert float(inner.scale.grad) == pytest.approx(p0 * 0.6 + (1 - p0) * 0.8 - 0.6, rel=1e-4)
    assert any(p is inner.scale for p in loss.parameters())


def test_l_softmax_matches_hand_computation():
    """L-Softmax with m = 2: the target logit is |W_y| |x| psi(theta), psi(theta) = (-1)^k cos(2 theta) - 2k
    for theta in [k pi/2, (k+1) pi/2]; the other logits are |W_j| |x| cos(theta_j)."""
    import math

    cfg = load_config([], ["loss.name=lsoftmax", "loss.sphere_margin=2"])
    loss = build_loss(cfg, num_classes=2, embedding_dim=2)
    inner = loss.loss
    with torch.no_grad():
        inner.W.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T)  # columns: class weights (2, 0) and (0, 1)
    x = torch.tensor([[1.0, 1.0]])  # |x| = sqrt 2, 45 degrees from both
    value = loss(x, torch.tensor([0]))
    theta = math.pi / 4  # k = 0: psi = cos(2 theta) = 0
    target = 2 * math.sqrt(2) * math.cos(2 * theta)
    other = 1 * math.sqrt(2) * math.cos(theta)
    expected = -math.log(math.exp(target) / (math.exp(target) + math.exp(other)))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-4)
    # Past 90 degrees (k = 1): psi = -cos(2 theta) - 2.
    x = torch.tensor([[-1.0, 3.0 ** 0.5]])  # 120 degrees from class 0, |x| = 2
    value = loss(x, torch.tensor([0]))
    theta = 2 * math.pi / 3
    target = 2 * 2 * (-math.cos(2 * theta) - 2)
    other = 1 * 2 * math.cos(math.pi / 6)
    expected = -math.log(math.exp(target) / (math.exp(target) + math.exp(other)))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-4)
