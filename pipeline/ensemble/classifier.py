"""A softmax classifier over concatenated embeddings: one class per known whale (and per mirrored
whale when flips are on). Full-batch-free: minibatches, so Kaggle's 15k photos x 5k whales fit a CPU."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.device import pick_device


class CosineClassifier(nn.Module):
    """Logits = scale * cos(feature, class weight): the same geometry the embeddings were trained for."""

    def __init__(self, dim: int, classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def init_from_means(model: CosineClassifier, x: np.ndarray, y: np.ndarray) -> None:
    """Start each class weight at its photos' mean feature: the classifier begins as a nearest-centroid
    rule and training only has to sharpen it."""
    with torch.no_grad():
        means = np.zeros(tuple(model.weight.shape), dtype=np.float32)
        np.add.at(means, y, x)
        model.weight.copy_(torch.from_numpy(means))


def train_classifier(x: np.ndarray, y: np.ndarray, classes: int, cfg: dict, seed: int = 0) -> CosineClassifier:
    device = pick_device()
    torch.manual_seed(seed)
    model = CosineClassifier(x.shape[1], classes, float(cfg["scale"])).to(device)
    init_from_means(model, x, y)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    g = torch.Generator().manual_seed(seed)
    batch = int(cfg["batch_size"])
    for _ in range(int(cfg["epochs"])):
        for idx in torch.randperm(len(xt), generator=g).split(batch):
            idx = idx.to(device)
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: CosineClassifier, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    device = next(model.parameters()).device
    out = [F.softmax(model(torch.from_numpy(x[i:i + batch]).to(device)), dim=1).cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.weight.shape[0]), dtype=np.float32)


def top_table(proba: np.ndarray, class_ids: np.ndarray, names, keep_top: int):
    """Long table Image, Id, score of each photo's `keep_top` most probable whales."""
    import pandas as pd

    from pipeline import columns as C

    k = min(keep_top, proba.shape[1])
    top = np.argsort(-proba, axis=1)[:, :k]
    rows = np.repeat(np.arange(len(proba)), k)
    return pd.DataFrame({C.IMAGE: np.asarray(names)[rows], C.ID: np.asarray(class_ids)[top.ravel()],
                         C.SCORE: np.take_along_axis(proba, top, axis=1).ravel().astype(np.float32)})
