"""The review page's match-line image: two photos side by side at one height, a coloured line per
verified match, nothing drawn where there is no match."""
import io

import numpy as np
from PIL import Image

from pipeline.reporting.match_lines import GAP, draw_match_lines, encode_image, strength_colours

GREY = 128


def photos():
    return np.full((100, 200, 3), GREY, np.uint8), np.full((50, 50, 3), GREY, np.uint8)


def coloured(pixels: np.ndarray) -> np.ndarray:
    """Pixels that are not the photos' grey nor the white gap (a line or a dot)."""
    return np.abs(pixels.astype(int) - GREY).max(axis=-1) > 20


def test_size_and_no_lines_without_matches():
    query, gallery = photos()
    image = draw_match_lines(query, gallery, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), height=200)
    # The query keeps its 2:1 shape at 200 pixels high (400 wide), the gallery photo becomes 200 x 200.
    assert image.shape == (200, 400 + GAP + 200, 3) and image.dtype == np.uint8
    photo_pixels = np.concatenate([image[:, :400].reshape(-1, 3), image[:, 400 + GAP:].reshape(-1, 3)])
    assert not coloured(photo_pixels).any()
    assert (image[:, 400:400 + GAP] == 255).all()
    assert np.array_equal(draw_match_lines(query, gallery, height=200), image)


def test_a_line_per_match_coloured_by_strength_and_nothing_elsewhere():
    query, gallery = photos()
    query_xy = np.array([[20.0, 20.0], [180.0, 80.0]])  # query pixels (200 x 100 photo)
    gallery_xy = np.array([[10.0, 40.0], [40.0, 5.0]])  # gallery pixels (50 x 50 photo)
    strength = np.array([0.0, 1.0])
    image = draw_match_lines(query, gallery, query_xy, gallery_xy, strength, height=200)
    offset = 400 + GAP
    a = query_xy * 2  # the query is scaled by 2, the gallery photo by 4
    b = gallery_xy * 4 + [offset, 0]
    for i, colour in enumerate(strength_colours(strength)):
        for t in np.linspace(0.05, 0.95, 12):  # along the line, away from the other line's crossing
            x, y = np.rint(a[i] + t * (b[i] - a[i])).astype(int)
            if 400 <= x < offset:
                continue  # the white gap is drawn over too, checked below by colour
            patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(int)
            assert np.abs(patch - colour).sum(axis=1).min() < 60, (i, t, patch, colour)
    weak, strong = strength_colours(strength)
    assert not np.array_equal(weak, strong)
    assert strong[0] > strong[2] and weak[2] > weak[0]  # strong is red-ish, weak blue-ish
    # Far from both lines the photos are untouched.
    assert not coloured(image[150:200, 0:150]).any()
    assert not coloured(image[100:200, offset + 100:]).any()


def test_encode_png_and_jpeg_round_trip():
    query, gallery = photos()
    image = draw_match_lines(query, gallery, [[10, 10]], [[20, 20]], [0.5], height=64)
    png = Image.open(io.BytesIO(encode_image(image, "PNG")))
    assert png.format == "PNG" and png.size == (image.shape[1], image.shape[0])
    assert np.array_equal(np.asarray(png), image)
    jpeg = Image.open(io.BytesIO(encode_image(image)))
    assert jpeg.format == "JPEG" and jpeg.size == (image.shape[1], image.shape[0])
