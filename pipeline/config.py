"""Every default in one place, YAML files layered on top, dotted command-line overrides last.

    cfg = load_config(["configs/pipeline.yaml", "configs/models/resnet18_arcface.yaml"],
                      overrides=["train.lr=0.001"])

A key that DEFAULTS does not have is an error that names the file (or override) and the key, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.errors import PipelineError

# The recipe (configs/models/<name>.yaml) used when none is named: EfficientNet-Lite0's ImageNet weights
# with an ArcFace head on the frozen features, chosen by cross-validation on humpback flukes
# (docs/training.md, "Starting from pretrained weights"; the figures in docs/benchmarks.md).
DEFAULT_MODEL = "lite0_head"

DEFAULTS: dict[str, Any] = {
    "name": None,  # the model's name; set from the config file's stem when loaded by name
    "seed": 0,
    "preprocess": {
        # Cached photos are resized (stretched) to this height and width; training and embedding
        # read the cache, never the JPEGs.
        "image_size": [128, 256],
        "workers": 2,
        # A CSV Image,x0,y0,x1,y1 of fluke boxes in original pixels; photos it lists are cropped to them.
        "boxes": None,
        # A box model from `whale boxes train` (WORK/boxes/model.pt): photos without a box in
        # preprocess.boxes are cropped to the box it predicts.
        "boxes_model": None,
        # Crop the other photos to the subject found against the border colour (see data/crop.py).
        "auto_crop": False,
        # Cut the flat margins that pad a photo (the competition's flukes sit on white bands above and
        # below); photos with a box are cropped to the box instead (data/crop.py, padding_box).
        "trim_padding": False,
        # Scale each photo to fit image_size with its aspect kept (the rest filled with its mean colour)
        # instead of stretching it to image_size.
        "keep_aspect": False,
    },
    "boxes": {
        # The learned fluke detector (`whale boxes train`): a box regressor on a timm backbone.
        "backbone": "test_resnet",
        "pretrained": False,
        "image_size": 128,  # photos are stretched to this square
        "epochs": 40,
        "lr": 0.003,
        "batch_size": 32,
    },
    "duplicates": {
        # Photos whose 64-bit perceptual hashes differ in at most this many bits count as duplicates.
        "max_distance": 4,
        # Unite whale ids that share a duplicate train photo (the alphabetically first id is kept).
        "merge_ids": False,
        # Put the whale of a test photo's train duplicate first in the submission (reported when used).
        "use_in_submission": False,
    },
    "folds": {
        "n_folds": 5,
        # Share of new_whale truths wanted in each fold's validation; the competition's test had ~28%.
        "new_whale_share": 0.28,
        # Share of multi-photo whales held out of a fold's training entirely, so that validation,
        # like test, holds whales never seen (their photos then count as new_whale).
        "holdout_whale_share": 0.1,
    },
    "model": {
        # Any timm model name, or an hf-hub address (e.g. hf-hub:BVRA/MegaDescriptor-T-224, online only).
        "backbone": "resnet18",
        # Where the backbone's starting weights come from (models/weights): null for random, `timm` (its
        # hub; online), `hf-hub:ORG/NAME` (online), `file:PATH` (a local file) or `package:NAME` (an
        # installed weights package, e.g. package:efficientnet_lite0; offline).
        "weights": None,
        "pretrained": False,  # true: the same as weights: timm (kept for older recipes)
        # The same as weights: file:PATH (kept for older recipes); model.backbone then
        # names its timm architecture (MegaDescriptor-L-384 is swin_large_patch4_window12_384).
        "pretrained_path": None,
        "backbone_args": {},  # passed to timm.create_model, e.g. {drop_path_rate: 0.1}
        # The backbone's input [height, width]; null: a transformer's own (timm's pretrained config),
        # a CNN takes the cache's size. Photos are resized to it on the device.
        "input_size": None,
        "mean": None,  # input normalisation; null: the backbone's own (timm's pretrained config)
        "std": None,
        # auto: GeM on a CNN's feature map, the backbone's own pooling elsewhere (ViT token, Swin,
        # ConvNeXt's norm head); gem or backbone to force one (see models/net.py).
        "pool": "auto",
        "neck": True,  # false: the backbone's pooled features are the embedding (zero-shot)
        # Zero-shot only (train.epochs: 0): subtract the mean pooled feature of the fold's training
        # photos and their mirrors before the embedding is normalised, so cosines spread around 0
        # instead of crowding near 1 (features that are all positive, e.g. histograms).
        "centre": False,
        "embedding_dim": 256,
        "gem_p": 3.0,
        "dropout": 0.0,
        "neck_norm": "batch",  # or "layer": no batch statistics (exact DDP on the CPU)
        # Recompute the backbone's activations in the backward pass instead of keeping them (timm's
        # set_grad_checkpointing): less memory (Swin-L at 384), about a third more compute per step.
        "grad_checkpointing": False,
    },
    "loss": {
        "name": "arcface",  # see pipeline/losses: the registry lists every name
        "margin": 0.3,  # arcface/cosface/subcenter: radians or cosine; pair losses: distance margin
        "scale": 30.0,  # softmax-margin losses; normface: the scale it starts from and then learns
        "miner": "batch_hard",  # triplet/contrastive: batch_hard, semihard or all
        "beta": 1.2,  # margin loss: initial (learned) boundary
        "temperature": 0.05,  # normalized softmax
        "sub_centers": 3,  # sub-center ArcFace
        "sphere_margin": 4,  # SphereFace's and L-Softmax's multiplicative angular margin
        "lr_multiplier": 10.0,  # the class centres learn faster than the backbone
        "margin_min": 0.05,  # dynamic_subcenter_arcface: the margin of the largest class (loss.margin: smallest)
        "margin_power": 0.25,  # dynamic_subcenter_arcface: margin follows class_size ** -power
        "hard_classes": 10,  # bce_hardest: negative classes per photo
        # loss.name: sum -> a weighted sum of these terms; each is {name, weight, any key above}
        "terms": [],
    },
    "sampler": {
        "classes_per_batch": 16,  # P
        "photos_per_class": 4,  # K; a whale with fewer photos is sampled with repetition
        # Share of each batch that is train's new_whale photos: negatives for everything, never positives.
        "new_whale_share": 0.0,
        # Each whale's mirrored photos form another identity (a mirrored fluke is another fluke):
        # twice the identities to learn from. Flip TTA then compares flipped query with flipped gallery.
        "flip_as_new_identity": False,
        # Hard negative class mining (Sohn's N-pair paper): grow each batch's set of whales greedily with
        # those most similar to the ones already in it, from a pool of hard_class_pool x P candidates,
        # using a running mean embedding per whale.
        "hard_classes": False,
        "hard_class_pool": 4,
    },
    "divide": {
        # Divide and conquer (Sanakoyeu et al. 2019): clusters > 1 cuts the embedding into that many
        # slices; every `every_epochs` the train photos are re-embedded and their whales clustered; slice
        # k learns from batches of cluster k. The last `finetune_share` of training (by epochs or by the
        # time budget, whichever is further along) trains the whole embedding.
        "clusters": 1,
        "every_epochs": 2,
        "finetune_share": 0.0,
    },
    "augment": {
        "shift_scale_rotate": 0.7,
        "brightness_contrast": 0.5,
        "color": 0.5,
        "grayscale": 0.2,
        "blur": 0.1,
    },
    "train": {
        "epochs": 30,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "warmup_epochs": 1,
        "time_budget_min": None,  # stop cleanly after this many minutes (a Kaggle kernel's limit)
        "workers": 0,  # data-loader processes; 0 keeps it in the main process
        "amp": True,  # mixed precision for training and embedding; only used on CUDA
        # auto: bfloat16 where the GPU supports it (no loss scaling), else float16; or float16, bfloat16.
        "amp_dtype": "auto",
        # Under float16 loss scaling a step with a non-finite loss or gradients is skipped (and
        # counted); training stops after this many skipped in a row.
        "max_skipped_steps": 50,
        # Split each batch into this many micro-batches whose gradients add up before one optimiser
        # step (less memory, same step for a loss that averages over photos); pair and triplet losses
        # find their positives and negatives within one micro-batch.
        "accumulate_steps": 1,
        # The backbone's learning rate is train.lr times this (the neck and pooling take train.lr).
        "backbone_lr_multiplier": 1.0,
        # Before any step of the whole network: the embedding neck (and ArcFace's centres) trained for
        # this many epochs on the frozen backbone's cached pooled features (training/head.py), at
        # head_lr in batches of head_batch_size. 0: none. With train.epochs 0, the head alone is trained.
        "head_epochs": 0,
        "head_lr": 1e-3,
        "head_batch_size": 256,
        # The head also learns from each photo's mirror image as the same whale (free: the mirrored
        # features are computed for flip TTA anyway); ignored with sampler.flip_as_new_identity, where
        # the mirrors are whales of their own.
        "head_mirrors": True,
        # Batch norm layers of the backbone keep their pretrained statistics (eval mode) while the
        # network trains: small CPU batches give noisy statistics that erase what the weights knew.
        "freeze_bn": False,
        # No weight decay on norms, biases, scalars and the backbone's own no_weight_decay() tables
        # (position embeddings, class token, relative position biases), as timm's optimizer factory.
        "no_decay": False,
        "grad_clip": 5.0,
        # Snapshot ensembling (Huang et al. 2017): above 1, the learning rate runs this many cosine
        # cycles and the weights at the end of each are kept; embed concatenates every snapshot's
        # embedding, so one run's budget buys several members (models/net.py, SnapshotEnsemble).
        "snapshots": 1,
    },
    "embed": {
        "batch_size": 64,
        # Embed each photo and its mirror image; the stored vector is [e, e_flip] / sqrt(2), so a
        # dot product averages same-flip similarities: a flipped query meets flipped gallery photos.
        "flip_tta": True,
    },
    "knn": {
        "neighbours": 200,  # photos retrieved per query before grouping by whale
        "keep_top": 50,  # whales kept per query in the predictions file
        # flat: exact search (right up to ~1M gallery photos on a GPU); ivf or hnsw: approximate, for
        # millions of gallery photos (see retrieval/index.py; make bench reports IVF's recall).
        "index": "flat",
        "nlist": None,  # ivf: k-means cells; None = 4 * sqrt(gallery size)
        "nprobe": 16,  # ivf: cells searched per query
        # max: a whale scores its best photo; centroid: the mean of its photos' embeddings (3rd place, 2019).
        "aggregation": "max",
        "photos_per_whale": 3,  # identify and the web page: best-matching gallery photos per candidate
        # Post-processing (retrieval/rerank.py), off by default: database-side augmentation over dba_k
        # neighbours, alpha query expansion over qe_k neighbours (weights similarity ** qe_alpha), and
        # k-reciprocal re-ranking (Zhong et al. 2017) with its k1, k2 and lambda.
        "dba_k": 0,
        "qe_k": 0,
        "qe_alpha": 3.0,
        "rerank": "none",
        "k1": 20,
        "k2": 6,
        "lambda": 0.3,
        # A siamese verification head (retrieval/verification.py), trained per fold on the gallery's
        # photos as leave-one-out queries, re-scores each query's verify_top whales with P(right whale).
        "verify": False,
        "verify_top": 10,
        "verify_photos": 3,  # best-matching photos per candidate whale it reads
        "verify_features": "both",  # embedding ([|a-b|, a*b]), retrieval (cosines, gap, rank) or both
        "verify_hidden": 256,
        "verify_epochs": 20,
        "verify_lr": 0.001,
        "verify_weight": 1.0,  # 1: the probability alone; below 1, blended with the retrieval score
        # Local-feature matching (retrieval/local/, retrieval/postprocess/local.py): SIFT match counts re-score each query's
        # local_top whales, blended as (1 - local_weight) * score + local_weight * count / (count + local_scale).
        # On, with top 20 and weight 0.5: the highest CV MAP@5 on nyala and on lion (docs/benchmarks.md,
        # "Local features: on, top 20, weight 0.5").
        "local": True,
        "local_top": 20,
        "local_photos": 5,  # a whale's gallery photos nearest the query (embedding space) that are matched
        "local_keypoints": 500,
        "local_ratio": 0.5,  # Lowe's ratio test on squared distances, as wildlife-tools' MatchDescriptors
        "local_weight": 0.5,
        "local_scale": 10.0,
        # none: the ratio-test count above; homography or fundamental: only the matches one robustly
        # estimated transform explains count (retrieval/local/collect.py, OpenCV's USAC MAGSAC++), for pairs
        # with at least local_min_matches matches; local_ransac_px bounds an inlier's reprojection error.
        # homography: the highest mean CV MAP@5 of the default recipe over nyala and lion, pooled over
        # two bench-local runs, and on the demo's synthetic set (docs/benchmarks.md, "Geometry and
        # calibrated fusion"); as fast as counting. Photos too small for 8 ratio-test matches per pair
        # score 0 with it: use none there.
        "local_geometry": "homography",
        "local_min_matches": 8,
        "local_ransac_px": 4.0,
        "local_rootsift": False,  # RootSIFT (Hellinger) distances for the ratio test
        # Calibrated fusion (WildFusion's way): the global score and the local score each become P(same
        # individual) by isotonic regression on out-of-fold pairs, then
        # (1 - local_weight) * P_global + local_weight * P_local (decision/fusion_calibration.py).
        "local_calibrate": False,
        # The order the shortlist re-scorers run in, each when its own switch is on (knn.verify,
        # knn.local); a new one registers itself in retrieval/postprocess/ and is named here.
        "postprocess": ["verify", "local"],
    },
    "threshold": {
        "grid": 201,  # candidate new_whale thresholds tried between the score extremes
        # cv: the constant that maximises out-of-fold MAP@5; share: new_whale first for this share of
        # the queries (test's expected share of unseen whales; uses no labels at all).
        "strategy": "cv",
        "new_whale_share": 0.28,
    },
    "ensemble": {
        "models": [],  # list of {name, weight}; empty means the MODEL given on the command line
        # fusion: weighted mean of the models' per-whale kNN scores; classifier: softmax over the
        # concatenated embeddings; blend: blend_weight * fusion + (1 - blend_weight) * classifier.
        "methods": ["fusion"],
        "output": "best",  # the method submit uses; best = highest cross-validated MAP@5
        "blend_weight": 0.5,
        "classifier": {
            "epochs": 30,
            "lr": 0.01,
            "weight_decay": 0.0,
            "batch_size": 1024,
            "scale": 16.0,  # cosine logits' scale
            "flips": False,  # mirrored photos as classes of their own (needs embed.flip_tta)
            # Each model's block less the fold's training mean (features.centred): for pooled ImageNet
            # features, whose cosines all sit near 1.
            "centre": False,
            # With knn.local: its probabilities re-scored by local-feature matching, as knn's scores are.
            "local": True,
        },
        "pseudo_labels": {
            # Test photos whose best classifier/blend score reaches min_score join training, labelled
            # with that whale, and the classifier is trained again.
            "enabled": False,
            "min_score": 0.8,
        },
    },
}


# What a trained model depends on: a change here retrains, a change elsewhere (knn, threshold,
# ensemble, embed) leaves trained models alone.
TRAINING_SECTIONS = ("seed", "preprocess", "folds", "model", "loss", "sampler", "divide", "augment", "train")


def training_part(cfg: dict) -> dict:
    return {k: cfg.get(k) for k in TRAINING_SECTIONS}


# Mappings whose keys are the user's (passed on to a library), not ours to check.
FREE_MAPPINGS = {"model.backbone_args"}


def known_keys(saved: dict, base: dict, prefix: str = "") -> dict:
    """`saved` without the keys `base` no longer has: a checkpoint's config written before a setting
    was removed still loads (its removed settings meant nothing to the current code)."""
    out = {}
    for key, value in saved.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            continue
        if isinstance(base[key], dict) and isinstance(value, dict) and dotted not in FREE_MAPPINGS:
            value = known_keys(value, base[key], dotted + ".")
        out[key] = value
    return out


def deep_merge(base: dict, update: dict, source: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise PipelineError(f"unknown config key {dotted!r}", source)
        if dotted in FREE_MAPPINGS:
            if value is not None and not isinstance(value, dict):
                raise PipelineError(f"config key {dotted!r} must be a mapping", source)
            out[key] = {**out[key], **copy.deepcopy(value or {})}
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise PipelineError(f"config key {dotted!r} must be a mapping", source)
            out[key] = deep_merge(base[key], value, source, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """'train.lr=0.001' -> {'train': {'lr': 0.001}}; the value is parsed as YAML."""
    if "=" not in text:
        raise PipelineError(f"override {text!r} must look like section.key=value", "command line")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    out: dict = {}
    node = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(paths: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise PipelineError("config file not found", path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise PipelineError(f"not valid YAML: {e}", path) from None
        if not isinstance(data, dict):
            raise PipelineError("a config file must be a mapping of sections", path)
        cfg = deep_merge(cfg, data, str(path))
    for text in overrides:
        cfg = deep_merge(cfg, parse_override(text), f"override {text!r}")
    return cfg


def model_config_path(configs_dir: str | Path, model: str) -> Path:
    path = Path(configs_dir) / "models" / f"{model}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(configs_dir) / "models").glob("*.yaml"))
        raise PipelineError(f"no model config {model!r}; available: {', '.join(available) or 'none'}", path)
    return path


def config_layers(configs_dir: str | Path = "configs", model: str | None = None,
                  pipeline: str | Path | None = None) -> list[Path]:
    """The files of one run's config, in order: the pipeline file (default configs/pipeline.yaml, if
    present), configs/models/<model>.yaml, configs/ensemble.yaml (if present)."""
    paths: list[Path] = []
    if pipeline is not None:
        paths.append(Path(pipeline))
    elif (Path(configs_dir) / "pipeline.yaml").is_file():
        paths.append(Path(configs_dir) / "pipeline.yaml")
    if model:
        paths.append(model_config_path(configs_dir, model))
    if (Path(configs_dir) / "ensemble.yaml").is_file():
        paths.append(Path(configs_dir) / "ensemble.yaml")
    return paths


def load_stage_config(configs_dir: str | Path = "configs", model: str | None = None,
                      overrides: Iterable[str] = (), pipeline: str | Path | None = None) -> dict:
    """The one resolved config of a run: DEFAULTS <- config_layers(...) <- command-line overrides.
    Every stage (and identify, serve, report) resolves it the same way and saves it with its outputs."""
    cfg = load_config(config_layers(configs_dir, model, pipeline), overrides)
    if model:
        cfg["name"] = model
    return cfg
