"""Local-feature match counts kept between runs, beside the descriptors they were computed from:
WORK/cache/local-matches-<keypoints>-r<ratio>[-<geometry>...].npz (one file per scorer).

Why: SIFT matching is most of knn's time with `knn.local`, and the runs of one work folder match the
same pairs again: each model's knn, the ensemble's classifier, a snapshot member, a re-run after a
config change. On nyala, 62% of the pairs colour_histogram's knn matches were matched by
coupled_clusters' knn before it. A count depends only on the two photos' descriptors and the ratio,
so it stays valid for as long as the descriptor file does: the file records that file's size and
modification time, and counts saved against another version are ignored.

Pairs are cache rows (query row, gallery row); a photo outside the cache (identify's upload) is never
saved. Several processes may save at once: each merges what is on disk before it writes (atomically),
so a lost race only costs a recount.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from pipeline.io.atomic import write_npz

log = logging.getLogger(__name__)


def _stamp(descriptors: Path) -> np.ndarray:
    info = descriptors.stat()
    return np.array([info.st_size, info.st_mtime_ns], dtype=np.int64)


def _key(query_row: int, gallery_rows) -> np.ndarray:
    return (np.int64(query_row) << 32) | np.asarray(gallery_rows, dtype=np.int64)


class SavedMatches:
    """Counts of (query row, gallery row) pairs: `get` what was saved, `add` new ones, `save` them."""

    def __init__(self, path: Path, stamp: np.ndarray):
        self.path, self.stamp = path, stamp
        self.counts: dict[int, int] = self._read()
        self._changed = False

    @classmethod
    def beside(cls, descriptors: Path, scorer: str | float) -> "SavedMatches":
        """The saved counts for the descriptor file `descriptors` (local-sift-<keypoints>.npz) and one
        scorer (match.MatchSettings.tag: the ratio, and the geometry when it verifies; a bare
        number is a ratio, as before)."""
        descriptors = Path(descriptors)
        tag = f"-r{float(scorer):g}" if isinstance(scorer, (int, float)) else scorer
        name = descriptors.stem.replace("local-sift-", "local-matches-") + f"{tag}.npz"
        return cls(descriptors.with_name(name), _stamp(descriptors))

    def _read(self) -> dict[int, int]:
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path) as saved:
                if not np.array_equal(saved["stamp"], self.stamp):
                    return {}  # counted on other descriptors: the cache was rebuilt since
                return dict(zip(saved["keys"].tolist(), saved["counts"].tolist()))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable saved match counts %s (%s); they will be recounted", self.path, err)
            return {}

    def get(self, query_row: int, gallery_rows) -> list[int | None]:
        """Each pair's saved count, None where it was never counted."""
        return [self.counts.get(k) for k in _key(query_row, gallery_rows).tolist()]

    def add(self, query_row: int, gallery_rows, counts) -> None:
        self.counts.update(zip(_key(query_row, gallery_rows).tolist(), (int(c) for c in counts)))
        self._changed = True

    def save(self) -> None:
        """Writes the counts added since the last save, merged with whatever another process saved."""
        if not self._changed:
            return
        merged = {**self._read(), **self.counts}
        keys = np.fromiter(merged.keys(), dtype=np.int64, count=len(merged))
        counts = np.fromiter(merged.values(), dtype=np.int32, count=len(merged))
        write_npz(self.path, stamp=self.stamp, keys=keys, counts=counts)
        self.counts = merged
        self._changed = False
