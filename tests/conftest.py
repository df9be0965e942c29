import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small synthetic Kaggle-layout data set, made once per test session."""
    from pipeline.data.synth import SynthSpec, make_dataset

    root = tmp_path_factory.mktemp("synth")
    make_dataset(root, SynthSpec(n_whales=25, photo_size=(96, 160), seed=3), progress=False)
    return root


def write_layout(root: Path, train_rows, test_names, make_images=True, distinct=False):
    """Write a minimal Kaggle layout with tiny valid JPEGs (one flat colour, or random noise per photo
    when `distinct`, so that no two are near-duplicates); returns root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def photo():
        if distinct:
            return Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8))
        return Image.new("RGB", (32, 24), (10, 20, 30))

    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    lines = ["Image,Id"] + [f"{a},{b}" for a, b in train_rows]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "sample_submission.csv").write_text(
        "Image,Id\n" + "".join(f"{n},new_whale w_1 w_2 w_3 w_4\n" for n in test_names))
    if make_images:
        for name, _ in train_rows:
            photo().save(root / "train" / name)
        for name in test_names:
            photo().save(root / "test" / name)
    return root


def bomb_png(side: int = 20000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (400 M by default): past Pillow's
    decompression-bomb limit, so opening it must be refused rather than decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# 48x96 photos hold about 19 SIFT keypoints and a same-whale pair about 2 ratio-test matches, under the
# 8 a homography needs (knn.local_min_matches): the tiny chain matches by counts, not the default geometry.
TINY_SETS = ["preprocess.image_size=[48,96]", "folds.n_folds=3", "train.epochs=8", "knn.local_geometry=none"]


@pytest.fixture(scope="session")
def trained_tiny(tiny_synth, tmp_path_factory):
    """The whole chain run once on the tiny synthetic set with the demo recipe: (data, work)."""
    from pipeline.chain import run_chain

    work = tmp_path_factory.mktemp("trained")
    run_chain(tiny_synth, work, "demo_triplet", REPO / "configs", TINY_SETS)
    return tiny_synth, work


def prepare_twins(data, tmp_path, sets, names=("a", "b")):
    """Two WORK folders with the same cache and one shared folds file, for runs to compare."""
    from pipeline.cli import main

    args = [x for s in sets for x in ("--set", s)]
    folds_file = tmp_path / "folds.csv"
    for name in names:
        assert main(["preprocess", "--data", str(data), "--work", str(tmp_path / name), *args]) == 0
    assert main(["folds", "--work", str(tmp_path / names[0]), "--folds-file", str(folds_file), *args]) == 0
    return folds_file


def train_argv(work, folds_file, sets, model="test_arcface"):
    """`whale train` arguments for fold 0 of `model` with config overrides `sets`."""
    return ["train", "--work", str(work), "--configs", str(REPO / "configs"), "--model", model,
            "--folds-file", str(folds_file), "--folds", "0", *(x for s in sets for x in ("--set", s))]


@pytest.fixture(scope="session")
def catalogue_base(trained_tiny, tmp_path_factory):
    """A catalogue made once per session from the tiny trained work folder (init is the costly part)."""
    from pipeline.cli import main

    data, work = trained_tiny
    base = tmp_path_factory.mktemp("catalogue") / "base"
    assert main(["catalogue", "init", "--catalogue", str(base), "--from", str(data), "--work", str(work)]) == 0
    return base


@pytest.fixture()
def catalogue(catalogue_base, tmp_path):
    """A fresh copy of the base catalogue for one test."""
    import shutil

    folder = tmp_path / "cat"
    shutil.copytree(catalogue_base, folder)
    return folder


def catalogue_db(folder):
    """The catalogue's database, rows readable by column name."""
    import sqlite3

    connection = sqlite3.connect(folder / "catalogue.db")
    connection.row_factory = sqlite3.Row
    return connection


def require_browser():
    """Chromium and its driver, else a skip on a developer's machine and a failure in CI (CI=true), where
    .ci/run installs them: a lost install step must show, not hide behind a skip."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = "no chromium/chromedriver (Debian packages chromium, chromium-driver); .ci/run installs them"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {message}")
        pytest.skip(message)
    return chromium, driver


def headless_chromium(window: str = "1100,700"):
    """Debian's Chromium under selenium, headless (require_browser: a skip, or a failure in CI)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={window}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def exif_photo(path, taken=None, gps=None, make="Canon", model="Canon EOS 7D", serial="0123", seed=0, size=(64, 48)):
    """A small JPEG with what a camera writes: DateTimeOriginal ("2024:06:01 10:32:05"), GPS ((lat, lon)
    in signed decimal degrees, written as degrees/minutes/seconds with N/S, E/W), make, model, serial.
    Random pixels (by `seed`), so that two photos never share a content hash."""
    import numpy as np
    from PIL import Image

    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    details = exif.get_ifd(0x8769)
    if taken:
        details[0x9003] = taken
    if serial:
        details[0xA431] = serial
    if gps:
        info = exif.get_ifd(0x8825)
        for (ref, value, signs) in ((1, gps[0], "NS"), (3, gps[1], "EW")):
            whole = abs(value)
            minutes = (whole - int(whole)) * 60
            info[ref] = signs[value < 0]
            info[ref + 1] = (float(int(whole)), float(int(minutes)), round((minutes - int(minutes)) * 60, 4))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif, quality=90)
    return Path(path)


# A small cache (32 x 64 photos, 3 folds) and P x K batches of 4 x 2: training tests in seconds.
SMALL_TRAIN = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
               "sampler.photos_per_class=2"]


@pytest.fixture(scope="module")
def small_prepared(tiny_synth, tmp_path_factory):
    """(ImageCache, folds) of the tiny synthetic set under SMALL_TRAIN, once per test module."""
    from pipeline.cli import main
    from pipeline.data.cache import ImageCache
    from pipeline.data.folds import read_folds

    work = tmp_path_factory.mktemp("small")
    sets = [x for s in SMALL_TRAIN for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return ImageCache.open(work), read_folds(work / "folds.csv")


def small_config(recipe: str = "test_arcface", *extra):
    """A recipe's config under SMALL_TRAIN and `extra` overrides."""
    from pipeline.config import load_stage_config

    return load_stage_config(REPO / "configs", recipe, [*SMALL_TRAIN, *extra])
