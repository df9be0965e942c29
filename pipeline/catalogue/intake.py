"""A survey as it comes off the cards: files and folders (walked recursively, in name order) sorted into
the photos to try and the files passed over, each with its reason.

    a photo type (io/layout.IMAGE_SUFFIXES)      tried: it goes in if it decodes and is not stored already
    RAW (.CR2, .NEF, .ARW, .DNG, ...)            skipped, saying whether a JPEG of the same name is beside it
    sidecars and system files (.xmp, .DS_Store,  skipped
      Thumbs.db, ._* AppleDouble, desktop.ini)
    hidden and system folders (.Trashes,         skipped whole, listed once
      .Spotlight-V100, __MACOSX, $RECYCLE.BIN)
    anything else                                skipped: not a photo type
    a broken link (its target is missing)        refused when its name is a photo type, else skipped
    a pipe, socket or device                     skipped
    a path that does not exist                   refused: file not found"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.io.layout import IMAGE_SUFFIXES, not_a_photo_type

RAW_SUFFIXES = {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf",
                ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".rwl", ".raw"}
SIDECAR_SUFFIXES = {".xmp", ".thm", ".aae", ".dop", ".pp3", ".xml", ".json", ".ini", ".db", ".lrv", ".ctg"}
SYSTEM_NAMES = {"thumbs.db", "desktop.ini", ".ds_store", "ehthumbs.db", "icon\r"}
SYSTEM_FOLDERS = {"__macosx", "$recycle.bin", "system volume information"}


@dataclass(frozen=True)
class PassedOver:
    path: Path
    reason: str
    refused: bool = False  # refused (the exit status says so) rather than skipped
    row: int | None = None  # the spreadsheet's row, when `path` is a spreadsheet

    @property
    def where(self) -> str:
        return f"{self.path}, row {self.row}" if self.row is not None else str(self.path)


def skip_reason(path: Path) -> str | None:
    """Why a file is not tried as a photo, or None when it is a photo type."""
    name, suffix = path.name, path.suffix.lower()
    if name.lower() in SYSTEM_NAMES or name.startswith("._"):
        return "system file"
    if suffix in RAW_SUFFIXES:
        beside = _photos_by_stem(path.parent).get(path.stem)
        return (f"RAW file; the photo beside it, {beside}, is tried" if beside
                else "RAW file: not a photo type (export a JPEG)")
    if suffix in SIDECAR_SUFFIXES:
        return f"sidecar file ({suffix})"
    return not_a_photo_type(path.suffix)


@functools.lru_cache(maxsize=64)
def _photos_by_stem(folder: Path) -> dict[str, str]:
    return {p.stem: p.name for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def broken_link(path: Path) -> PassedOver:
    """A link whose target cannot be read (gone, an unmounted drive, a loop): refused when it stands for
    a photo, else skipped as its name says."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    reason = f"a broken link (to {target}, which cannot be opened)"
    other = skip_reason(path)
    return PassedOver(path, f"{reason}; {other}" if other else reason, refused=other is None)


def hidden_folder(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FOLDERS


def gather(paths) -> tuple[list[Path], list[PassedOver]]:
    """(photos to try, in the order given with each folder walked in name order; what was passed over).
    A file named twice is tried once."""
    photos: list[Path] = []
    passed: list[PassedOver] = []
    seen: set[Path] = set()

    def visit_file(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        reason = skip_reason(path)
        if reason:
            passed.append(PassedOver(path, reason))
        else:
            photos.append(path)

    def visit_folder(folder: Path) -> None:
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            if child.is_dir():
                if hidden_folder(child):
                    passed.append(PassedOver(child, "hidden or system folder"))
                else:
                    visit_folder(child)
            elif child.is_file():
                visit_file(child)
            elif child.is_symlink():
                passed.append(broken_link(child))
            else:
                passed.append(PassedOver(child, "not a regular file (a pipe, socket or device)"))

    _photos_by_stem.cache_clear()  # a folder's listing is cached for one walk only
    for given in paths:
        path = Path(given)
        if path.is_dir():
            visit_folder(path)
        elif path.is_file():
            visit_file(path)
        elif path.is_symlink():
            passed.append(broken_link(path))
        else:
            passed.append(PassedOver(path, "file not found", refused=True))
    return photos, passed
