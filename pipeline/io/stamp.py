"""Skip a stage whose inputs did not change.

A stage fingerprints its inputs (each file's path, size and modification time, plus the settings that
shape its output) and writes the fingerprint next to its outputs, last, after they are all in place.
On a re-run with the same fingerprint and every output present it does nothing and says so; --force
redoes it. A crash before the stamp is written means the next run redoes the stage.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

from pipeline.io.atomic import write_text
from pipeline.io.paths import stamps_dir

log = logging.getLogger(__name__)


def fingerprint(files: Iterable[str | Path], settings: Any = None) -> str:
    entries = []
    for path in files:
        path = Path(path)
        st = path.stat() if path.exists() else None
        entries.append([str(path.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None])
    blob = json.dumps({"files": entries, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Stamp:
    """WORK/stamps/<key>.stamp; `key` names the stage and what it was run for (model, fold, output)."""

    def __init__(self, work: str | Path, key: str, digest: str, outputs: Iterable[str | Path]):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        self.path = stamps_dir(work) / f"{safe}.stamp"
        self.stage, self.digest, self.outputs = key, digest, [Path(p) for p in outputs]

    def up_to_date(self, force: bool = False) -> bool:
        fresh = (not force and self.path.is_file() and self.path.read_text().strip() == self.digest
                 and all(p.exists() for p in self.outputs))
        if fresh:
            log.info("%s: inputs unchanged since the last run; nothing to do (--force to redo)", self.stage)
        return fresh

    def write(self) -> None:
        write_text(self.path, self.digest + "\n")
