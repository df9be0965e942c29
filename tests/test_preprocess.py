import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.data.cache import ImageCache
from pipeline.data.images import UnreadableImage, load_rgb
from tests.conftest import write_layout


def save(path, mode, size=(40, 30)):
    if mode == "I;16":
        Image.fromarray((np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 50).astype(np.uint16)).save(path)
    elif mode == "P":
        Image.new("RGB", size, (200, 10, 10)).convert("P", palette=Image.ADAPTIVE).save(path)
    else:
        Image.new(mode, size).save(path)


@pytest.mark.parametrize("mode, suffix", [("CMYK", ".jpg"), ("I;16", ".png"), ("P", ".png"), ("RGBA", ".png"),
                                          ("L", ".jpg"), ("LA", ".png")])
def test_unusual_modes_decode_to_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"x{suffix}"
    save(path, mode)
    arr, w, h, gray = load_rgb(path, (16, 32))
    assert arr.shape == (16, 32, 3) and arr.dtype == np.uint8 and (w, h) == (40, 30)


def test_grayscale_is_detected(tmp_path):
    Image.new("L", (20, 20), 90).convert("RGB").save(tmp_path / "g.png")
    Image.new("RGB", (20, 20), (10, 90, 200)).save(tmp_path / "c.png")
    assert load_rgb(tmp_path / "g.png", (8, 8))[3] is True
    assert load_rgb(tmp_path / "c.png", (8, 8))[3] is False


@pytest.mark.parametrize("content, message", [
    (b"this is not an image", "cannot decode"),
    ("truncated", "cannot decode"),
    ("tiny", "1x1 pixels"),
])
def test_bad_photos_raise(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        Image.new("RGB", (200, 200), (1, 2, 3)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=message):
        load_rgb(path, (8, 8))


def test_preprocess_caches_every_photo(tmp_path):
    data = write_layout(tmp_path / "data", [("a.jpg", "w_1"), ("b.jpg", "new_whale")], ["t.jpg"])
    assert main(["preprocess", "--data", str(data), "--work", str(tmp_path / "work"),
                 "--set", "preprocess.image_size=[8,16]", "--set", "preprocess.workers=1"]) == 0
    cache = ImageCache.open(tmp_path / "work")
    assert cache.images.shape == (3, 8, 16, 3)
    assert list(cache.manifest["Image"]) == ["a.jpg", "b.jpg", "t.jpg"]
    assert list(cache.manifest["split"]) == ["train", "train", "test"]


def test_preprocess_names_the_row_of_a_corrupt_photo(tmp_path, capsys):
    data = write_layout(tmp_path / "data", [("a.jpg", "w_1"), ("b.jpg", "w_2")], ["t.jpg"])
    (data / "train" / "b.jpg").write_bytes(b"garbage")
    work = tmp_path / "work"
    assert main(["preprocess", "--data", str(data), "--work", str(work)]) == 2
    err = capsys.readouterr().err
    assert "train.csv, row 3" in err and "b.jpg" in err and "cannot decode" in err
    assert not (work / "cache" / "images.npy").exists()
    assert not list(work.rglob("*.tmp-*"))


def test_preprocess_ignores_columns_beyond_image_and_id(tmp_path):
    data = write_layout(tmp_path / "data", [("a.jpg", "w_1"), ("b.jpg", "new_whale")], ["t.jpg"])
    (data / "train.csv").write_text("Image,Id,date,location,encounter\na.jpg,w_1,2024-06-01,\"64.1,-21.9\",E1\n"
                                    "b.jpg,new_whale,,,\n")
    assert main(["preprocess", "--data", str(data), "--work", str(tmp_path / "work"),
                 "--set", "preprocess.image_size=[8,16]", "--set", "preprocess.workers=1"]) == 0
    cache = ImageCache.open(tmp_path / "work")
    assert list(cache.manifest["Image"]) == ["a.jpg", "b.jpg", "t.jpg"]
    assert "date" not in cache.manifest.columns
