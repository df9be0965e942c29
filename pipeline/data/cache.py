"""The preprocessed image cache: one memory-mapped uint8 array of every photo plus a manifest.

    <WORK>/cache/images.npy       N x H x W x 3 uint8 (np.load(..., mmap_mode="r"))
    <WORK>/cache/manifest.parquet Image, split, Id, row, width, height, gray
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError
from pipeline.io.paths import cache_dir  # noqa: F401 (callers import it from here too)


@dataclass
class ImageCache:
    images: np.ndarray  # memory-mapped N x H x W x 3 uint8
    manifest: pd.DataFrame
    folder: Path = Path("work/cache")

    @classmethod
    def open(cls, work: str | Path) -> "ImageCache":
        folder = cache_dir(work)
        images_path, manifest_path = folder / "images.npy", folder / "manifest.parquet"
        for path in (images_path, manifest_path):
            if not path.is_file():
                raise PipelineError("image cache not found; run the preprocess stage first", path)
        manifest = pd.read_parquet(manifest_path)
        images = np.load(images_path, mmap_mode="r")
        if len(images) != len(manifest):
            raise PipelineError(f"{len(images)} cached photos but {len(manifest)} manifest rows; "
                                "re-run preprocess with --force", images_path)
        return cls(images=images, manifest=manifest, folder=folder)

    def rows(self, names) -> np.ndarray:
        """Cache rows of the named photos, in the order given."""
        lookup = pd.Series(self.manifest[C.ROW].to_numpy(), index=self.manifest[C.IMAGE])
        missing = [n for n in names if n not in lookup.index]
        if missing:
            raise PipelineError(f"{len(missing)} photo(s) not in the cache (first: {missing[0]}); "
                                "re-run preprocess", self.folder / "manifest.parquet")
        return lookup.loc[list(names)].to_numpy()

    def split(self, split: str) -> pd.DataFrame:
        return self.manifest[self.manifest[C.SPLIT] == split].reset_index(drop=True)
