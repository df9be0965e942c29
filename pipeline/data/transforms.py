"""Albumentations pipelines. No horizontal flip: a mirrored fluke is a different whale."""
from __future__ import annotations

import albumentations as A
import numpy as np
import torch

def train_transform(aug: dict) -> A.Compose:
    return A.Compose([
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-10, 10), shear=(-5, 5),
                 border_mode=0, p=aug["shift_scale_rotate"]),
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=aug["brightness_contrast"]),
        # Sea colour changes from photo to photo; the whale's identity does not.
        A.HueSaturationValue(hue_shift_limit=15, sat_shift_limit=30, val_shift_limit=15, p=aug["color"]),
        A.ToGray(p=aug["grayscale"]),
        A.GaussianBlur(blur_limit=(3, 5), p=aug["blur"]),
    ])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 (or H x W x 3) -> uint8 N x 3 x H x W (or 3 x H x W).

    Pixels stay uint8 until they reach the model's device: its InputAdapter converts, resizes and
    normalises them there (models/net.py), so loader processes, collation and the copy to a GPU move a
    quarter of the bytes of float32 and do no arithmetic."""
    x = torch.from_numpy(np.require(images, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))  # copies a read-only cache row
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(2, 0, 1)
