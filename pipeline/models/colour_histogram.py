"""A training-free backbone: the photo's HSV colour histogram over a spatial pyramid, registered in
timm's model registry as `colour_histogram`, so any recipe, the zero-shot path (train.epochs: 0),
embed with flip TTA, knn, the ensemble and identify use it like a network.

Why: on small sets the photos of one individual often come from one encounter (same light, same
background, same coat colour), and a network trained for CPU minutes learns little beyond those
colours. The histogram is the cheap, parameter-free descriptor of that evidence (the classic
colour-indexing baseline of Swain and Ballard), an ensemble member that costs no training minutes,
and a yardstick: a trained model that does not beat it has learnt nothing but colour.

    features = timm.create_model("colour_histogram", num_classes=0).forward_features(x)  # x: RGB on 0..1

Each pyramid level g splits the photo into g x g cells; each cell's joint HSV histogram (bins^3
bins, hue, saturation, value) is normalised to sum 1 and square-rooted (the Hellinger kernel: the
dot product of two such vectors is the Bhattacharyya coefficient); every level is then L2-normalised
and divided by sqrt(levels), so each level weighs the same in a cosine. Hue is circular; saturation
and value bins are equal-width on 0..1."""
from __future__ import annotations

import math

import torch
from timm.models import register_model
from timm.models._registry import generate_default_cfgs
from torch import nn


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB on 0..1 to HSV, each channel on 0..1 (hue 1.0 wraps to 0.0)."""
    x = x.clamp(0.0, 1.0)
    r, g, b = x.unbind(dim=1)
    value, argmax = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.stack([((g - b) / safe) % 6.0, (b - r) / safe + 2.0, (r - g) / safe + 4.0], dim=1)
    hue = hue.gather(1, argmax.unsqueeze(1)).squeeze(1) / 6.0
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue)) % 1.0
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue, saturation, value], dim=1)


class ColourHistogram(nn.Module):
    """No parameters; `forward_features` gives the pyramid histogram, `forward_head` passes it through
    (the embedding net's `pool: auto` then takes the backbone's own head, its `neck: false` the
    histogram itself)."""

    def __init__(self, bins: int = 8, levels: tuple[int, ...] = (1, 2), **_):
        super().__init__()
        if bins < 1 or not levels or min(levels) < 1:
            raise ValueError(f"colour_histogram needs bins >= 1 and pyramid levels >= 1, not bins={bins}, "
                             f"levels={levels}")
        self.bins, self.levels = int(bins), tuple(int(g) for g in levels)
        self.num_features = sum(g * g for g in self.levels) * self.bins ** 3
        self.pretrained_cfg = dict(default_cfgs["colour_histogram"].default.to_dict())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        hsv = rgb_to_hsv(x.float())
        b = self.bins
        index = (hsv * b).long().clamp(0, b - 1)
        colour = (index[:, 0] * b + index[:, 1]) * b + index[:, 2]  # N x H x W joint bin
        rows = torch.arange(h, device=x.device).view(h, 1)
        cols = torch.arange(w, device=x.device).view(1, w)
        out = []
        for g in self.levels:
            cell = (rows * g // h) * g + cols * g // w  # H x W cell of each pixel
            bins = (cell * b ** 3 + colour).view(n, -1)
            hist = torch.zeros(n, g * g * b ** 3, device=x.device).scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float32))
            hist = hist.view(n, g * g, -1)
            hist = (hist / hist.sum(dim=2, keepdim=True).clamp(min=1.0)).sqrt().flatten(1)
            out.append(nn.functional.normalize(hist, dim=1) / math.sqrt(len(self.levels)))
        return torch.cat(out, dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


# Inputs arrive on 0..1 (mean 0, std 1 after the cache's /255), at the cache's own size.
default_cfgs = generate_default_cfgs({"colour_histogram": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                                                           "input_size": (3, 128, 256), "num_classes": 0}})


@register_model
def colour_histogram(pretrained: bool = False, **kwargs) -> ColourHistogram:
    if pretrained:
        raise ValueError("colour_histogram has no weights: it is training-free (set model.pretrained: false)")
    for timm_only in ("num_classes", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(timm_only, None)
    return ColourHistogram(**kwargs)
