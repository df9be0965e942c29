"""Losses by name: `build_loss(cfg, num_classes, embedding_dim, class_counts)`.

One module per concept: `pml` registers what pytorch-metric-learning has (contrastive, triplet and its
miners, N-pair, margin loss with distance-weighted sampling, normalized softmax, ArcFace, CosFace,
SphereFace, L-Softmax, sub-center ArcFace); `coupled_clusters`, `dynamic_subcenter`, `bce_hardest` and
`normface` (NormFace with its learned scale) are our own.
`registry` holds the name table, new_whale handling, weighted sums (loss.name: sum) and the
divide-and-conquer slices. Losses with class weights own them: the optimiser and the checkpoint
include the loss's parameters.
"""
from pipeline.losses import bce_hardest, coupled_clusters, dynamic_subcenter, normface, pml  # noqa: F401  (register)
from pipeline.losses.registry import LOSSES, build_loss, register, unique_negatives  # noqa: F401
from pipeline.losses.pml import MinedLoss  # noqa: F401
