"""The divide-and-conquer hook: re-cluster the whales every M epochs (Sanakoyeu et al., CVPR 2019).

Before epoch e with e % every == 0 the hook embeds the training photos without augmentation, averages
them per whale, and k-means the whales into K clusters; the sampler then draws batch b from cluster
b mod K and the loss trains slice b mod K of the embedding (see losses.registry.SliceLosses). The last
`finetune_share` of training (by epochs or time budget, whichever is further) draws from every whale
and trains the whole embedding.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.training.hooks import Hook

log = logging.getLogger(__name__)


def cluster_classes(embeddings: np.ndarray, labels: np.ndarray, classes: np.ndarray, clusters: int,
                    seed: int) -> np.ndarray:
    """k-means of the per-class mean embeddings; returns the cluster of each entry of `classes`."""
    from sklearn.cluster import KMeans

    means = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
    means /= np.maximum(1e-12, np.linalg.norm(means, axis=1, keepdims=True))
    k = min(int(clusters), len(classes))
    return KMeans(n_clusters=k, n_init=3, random_state=int(seed)).fit_predict(means).astype(np.int64)


class Recluster(Hook):
    def __init__(self, dataset, clusters: int, every_epochs: int, finetune_share: float, batch_size: int = 64):
        self.dataset, self.clusters = dataset, int(clusters)
        self.every, self.finetune = max(1, int(every_epochs)), float(finetune_share)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def _embed(self, trainer) -> np.ndarray:
        model = trainer.model
        was_training = model.training
        model.eval()
        out = []
        known = np.flatnonzero(self.dataset.labels >= 0)
        for start in range(0, len(known), self.batch_size):
            images = torch.stack([self.dataset[int(i)][0] for i in known[start:start + self.batch_size]])
            out.append(F.normalize(model(images.to(trainer.device)).float(), dim=1).cpu().numpy())
        model.train(was_training)
        return np.concatenate(out), self.dataset.labels[known]

    def before_epoch(self, trainer) -> None:
        sampler = trainer.loader.batch_sampler
        if self.finetune > 0 and trainer.progress() >= 1 - self.finetune:
            if sampler.groups is not None:
                log.info("divide and conquer: epoch %d fine-tunes the whole embedding", trainer.epoch)
            sampler.groups = None
            return
        if sampler.groups is not None and trainer.epoch % self.every:
            return
        embeddings, labels = self._embed(trainer)
        groups = cluster_classes(embeddings, labels, sampler.classes, self.clusters,
                                 seed=trainer.seed * 1000 + trainer.epoch)
        # Ranks must agree on the clusters; k-means on GPU embeddings may differ in the last bits.
        sampler.groups = trainer.dist.broadcast_array(groups)
        log.info("divide and conquer: epoch %d, whales per cluster %s", trainer.epoch,
                 np.bincount(sampler.groups, minlength=self.clusters).tolist())
