"""Read and validate a data folder in the Kaggle humpback layout.

    train.csv              Image,Id   (any further columns, e.g. date, location, encounter: ignored here,
                                       kept by `whale catalogue init`)
    train/<Image>
    test/<Image>
    sample_submission.csv  Image,Id   (its Image column lists the test photos)

Rows are numbered as a spreadsheet shows them: the header is row 1, the first photo row 2.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import columns as C
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def not_a_photo_type(suffix: str) -> str | None:
    """Why a file with this suffix is refused as a photo (the catalogue and both pages say it alike),
    or None when it is one of IMAGE_SUFFIXES."""
    if suffix.lower() in IMAGE_SUFFIXES:
        return None
    return f"{suffix or 'no extension'} is not a photo type ({', '.join(sorted(IMAGE_SUFFIXES))})"


@dataclass(frozen=True)
class KaggleLayout:
    root: Path
    train: pd.DataFrame  # Image, Id
    test: pd.DataFrame  # Image

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"


def read_layout(root: str | Path, check_files: bool = True) -> KaggleLayout:
    root = Path(root)
    if not root.is_dir():
        raise PipelineError("data folder not found (expected the Kaggle layout: train.csv, train/, test/, "
                            "sample_submission.csv)", root)
    train = read_labels_csv(root / "train.csv")
    test = read_image_list(root / "sample_submission.csv")
    if check_files:
        _check_listed_files(train, root / "train.csv", root / "train")
        _check_listed_files(test, root / "sample_submission.csv", root / "test")
        _warn_unlisted(test, root / "test", root / "sample_submission.csv")
    return KaggleLayout(root=root, train=train[[C.IMAGE, C.ID]], test=test[[C.IMAGE]])


def _read_csv(path: Path, expected: list[str], more_allowed: bool = False) -> pd.DataFrame:
    """A CSV whose header is `expected`; with `more_allowed`, one that holds those columns among others."""
    if not path.is_file():
        raise PipelineError("file not found", path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=False)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"file is empty; expected a header {','.join(expected)}", path, 1) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise PipelineError(f"not a readable CSV: {e}", path) from None
    header = [str(c) for c in df.columns]
    if more_allowed and set(expected) <= set(header) and len(set(header)) == len(header):
        return _non_empty(df, path)
    if header != expected:
        wanted = f"{','.join(expected)!r}" + (" (and any other columns)" if more_allowed else "")
        raise PipelineError(f"header is {','.join(header)!r}, expected {wanted}", path, 1)
    return _non_empty(df, path)


def _non_empty(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if df.empty:
        raise PipelineError("no rows after the header", path, 2)
    return df


def read_labels_csv(path: Path) -> pd.DataFrame:
    """train.csv: every row a photo name and a whale id without spaces; photo names unique. Columns
    beyond Image,Id (a lab's date, location, encounter, notes) are returned as they are."""
    df = _read_csv(path, [C.IMAGE, C.ID], more_allowed=True)
    _check_images_column(df, path)
    for i, value in enumerate(df[C.ID]):
        if value.strip() == "":
            raise PipelineError(f"empty {C.ID}", path, i + 2)
        if any(ch.isspace() for ch in value):
            raise PipelineError(f"{C.ID} {value!r} contains white space (submission labels are "
                                f"space-separated)", path, i + 2)
    return df.reset_index(drop=True)


def read_image_list(path: Path) -> pd.DataFrame:
    """sample_submission.csv: only the Image column matters; names must be unique."""
    df = _read_csv(path, [C.IMAGE, C.ID])
    _check_images_column(df, path)
    return df.reset_index(drop=True)


def _check_images_column(df: pd.DataFrame, path: Path) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(df[C.IMAGE]):
        row = i + 2
        if name.strip() == "":
            raise PipelineError(f"empty {C.IMAGE}", path, row)
        if "/" in name or "\\" in name or name.startswith("."):
            raise PipelineError(f"{C.IMAGE} {name!r} must be a plain file name", path, row)
        if name in seen:
            raise PipelineError(f"duplicate {C.IMAGE} {name!r} (first at row {seen[name]})", path, row)
        seen[name] = row


def _check_listed_files(df: pd.DataFrame, csv_path: Path, folder: Path) -> None:
    if not folder.is_dir():
        raise PipelineError(f"folder {folder.name}/ not found next to {csv_path.name}", folder)
    present = {p.name for p in folder.iterdir()}
    for i, name in enumerate(df[C.IMAGE]):
        if name not in present:
            raise PipelineError(f"photo {name!r} is listed but missing from {folder}", csv_path, i + 2)


def _warn_unlisted(df: pd.DataFrame, folder: Path, csv_path: Path) -> None:
    listed = set(df[C.IMAGE])
    extra = sorted(p.name for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed)
    if extra:
        log.warning("%d photo(s) in %s are not listed in %s and are ignored (first: %s)",
                    len(extra), folder, csv_path.name, extra[0])
