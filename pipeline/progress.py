"""Progress of long stages: a live bar on a terminal, an occasional plain log line anywhere else.

A batch job's output goes to a file, where a progress bar's carriage-return refreshes pile up into
lines of tens of kilobytes. When stderr is not a terminal, progress is a log line every
WHALE_PROGRESS_EVERY seconds (default 30) and one at the end, readable with `less` and `grep`.
WHALE_PROGRESS=bar|lines|off forces a mode.
"""
from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("pipeline.progress")


def _mode() -> str:
    forced = os.environ.get("WHALE_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    return "bar" if sys.stderr.isatty() else "lines"


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, leave: bool = True):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.mode = _mode()
        self.every = float(os.environ.get("WHALE_PROGRESS_EVERY", "30"))
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._initial = self.n
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, leave=leave)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "lines" and time.monotonic() - self._last >= self.every:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def _line(self) -> None:
        self._last = time.monotonic()
        elapsed = self._last - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        log.info("%s: %d/%d %s%s, %.0fs, %.1f %s/s%s", self.desc, self.n, self.total, self.unit, share, elapsed,
                 rate, self.unit, f", {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.n > self._initial:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable, total: int, desc: str, unit: str = "it", leave: bool = True):
    """Iterate with progress (tqdm-like)."""
    with Progress(total, desc, unit, leave=leave) as progress:
        for item in iterable:
            yield item
            progress.update()
