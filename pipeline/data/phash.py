"""Perceptual hashes (pHash): 64 bits per photo that survive resizing, re-encoding and small edits.

The photo is shrunk to 32 x 32 gray, its 2-D DCT taken, and the 8 x 8 lowest frequencies (without
the DC term's influence on the median) thresholded at their median. Near-duplicates differ in a few
bits; unrelated photos in about 32.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dctn

HASH_BYTES = 8


def phash(img: Image.Image) -> np.ndarray:
    """8 uint8 bytes (64 bits) of the photo's perceptual hash."""
    small = np.asarray(img.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float64)
    low = dctn(small, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return np.packbits(bits)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def close_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows of an N x 8 uint8 hash array within `max_distance` bits: (i, j, d).
    faiss's binary index does the all-pairs Hamming search in C (33k photos: about a second)."""
    import faiss

    hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
    if len(hashes) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    index = faiss.IndexBinaryFlat(HASH_BYTES * 8)
    index.add(hashes)
    # range_search returns distances strictly below the radius.
    limits, distances, labels = index.range_search(hashes, int(max_distance) + 1)
    queries = np.repeat(np.arange(len(hashes)), np.diff(limits).astype(np.int64))
    keep = queries < labels
    return queries[keep].astype(np.int64), labels[keep].astype(np.int64), distances[keep].astype(np.int64)
