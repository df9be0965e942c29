"""The review page's pictures, rendered on the server and kept in a small cache shared by the server's
threads: a catalogue photo at a display height, and a query photo beside a candidate's photo with the
local matches drawn between them (reporting/match_lines.py). The lines are the evidence that was scored:
the matches local/collect.py's `scored_matches` keeps with the settings that scored the pair (the
bundle's knn.local_*: ratio, geometry, minimum matches; Pictures.settings, which the page names). Where
local matching is missing the pair is drawn without lines (and says so)."""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.reporting.match_lines import draw_match_lines, encode_image

log = logging.getLogger(__name__)
MATCH_SIDE = 640  # local features are matched on photos whose longer side is at most this
MAX_HEIGHT = 1600


class LRU:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()  # outside the lock: two threads may both make it, neither waits on the other
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def load_display(path: Path, max_side: int) -> np.ndarray:
    """The stored photo upright (EXIF), RGB, its longer side at most `max_side` (never enlarged)."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((max_side, max_side), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def geometry_available() -> bool:
    try:
        from pipeline.retrieval.local.collect import scored_matches  # noqa: F401
    except ImportError:
        return False
    return True


class Pictures:
    """`path_of(hash) -> Path` locates a catalogue photo (the store's photo_path); `settings` (a
    local.match.MatchSettings) match and score a pair as the scoring did (the defaults' when None)."""

    def __init__(self, path_of, size: int = 512, settings=None):
        from pipeline.retrieval.local.match import MatchSettings

        self.path_of = path_of
        self.settings = settings or MatchSettings()
        self.cache = LRU(size)  # JPEG bytes and match arrays: small
        self.decoded = LRU(64)  # decoded photos at MATCH_SIDE (about 0.6 MB each)

    def rgb(self, digest: str, max_side: int) -> np.ndarray:
        if max_side != MATCH_SIDE:  # a larger picture is drawn once and kept as JPEG bytes, not decoded
            return load_display(self.path_of(digest), max_side)
        return self.decoded.get(digest, lambda: load_display(self.path_of(digest), MATCH_SIDE))

    def photo(self, digest: str, height: int) -> bytes:
        height = int(np.clip(height, 32, MAX_HEIGHT))

        def make():
            rgb = self.rgb(digest, max(MATCH_SIDE, 2 * height))
            if rgb.shape[0] > height:
                width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
                rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
            return encode_image(rgb)
        return self.cache.get(("photo", digest, height), make)

    def matches(self, query: str, gallery: str):
        """(query_xy, gallery_xy, strength) in the MATCH_SIDE photos' pixels, or None without geometry."""
        def make():
            try:
                from pipeline.retrieval.local.collect import scored_matches
                from pipeline.retrieval.local.extract import sift_descriptors
            except ImportError:
                return None
            try:
                keypoints = self.settings.keypoints
                return scored_matches(sift_descriptors(self.rgb(query, MATCH_SIDE), keypoints),
                                      sift_descriptors(self.rgb(gallery, MATCH_SIDE), keypoints), self.settings)
            except Exception:  # a photo the matcher cannot use: the pair is still shown, without lines
                log.exception("local matching failed for %s against %s", query[:12], gallery[:12])
                return None
        return self.cache.get(("matches", query, gallery), make)

    def pair(self, query: str, gallery: str, height: int, lines: bool = True) -> bytes:
        height = int(np.clip(height, 32, MAX_HEIGHT))

        def make():
            side = max(MATCH_SIDE, 2 * height)
            q, g = self.rgb(query, side), self.rgb(gallery, side)
            found = self.matches(query, gallery) if lines else None
            if found is None:
                return encode_image(draw_match_lines(q, g, height=height))
            query_xy, gallery_xy, strength = found
            # The matches are in the MATCH_SIDE photos' pixels: to these photos' pixels.
            qs = q.shape[1] / self.rgb(query, MATCH_SIDE).shape[1]
            gs = g.shape[1] / self.rgb(gallery, MATCH_SIDE).shape[1]
            return encode_image(draw_match_lines(q, g, np.asarray(query_xy) * qs, np.asarray(gallery_xy) * gs,
                                                 strength, height=height))
        return self.cache.get(("pair", query, gallery, height, bool(lines)), make)
