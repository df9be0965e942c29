"""Albumentations pipelines. No horizontal flip: a mirrored fluke is a different whale."""
from __future__ import annotations

import albumentations as A
import numpy as np
import torch

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


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
    """uint8 N x H x W x 3 (or H x W x 3) -> normalised float N x 3 x H x W."""
    x = torch.from_numpy(np.array(images, dtype=np.float32))  # one copy; the cache itself is read-only
    x = (x - torch.from_numpy(MEAN)) / torch.from_numpy(STD)
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(2, 0, 1)
