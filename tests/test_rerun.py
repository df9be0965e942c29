"""Re-running a stage whose inputs did not change does nothing and says so; --force redoes it."""
import logging

from pipeline.cli import main
from tests.conftest import write_layout


def test_preprocess_and_folds_skip_when_unchanged(tmp_path, caplog):
    data = write_layout(tmp_path / "data", [(f"{i}.jpg", f"w_{i % 4}") for i in range(12)], ["t.jpg"])
    work = tmp_path / "work"
    pre = ["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.image_size=[8,16]"]
    folds = ["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), "--set", "folds.n_folds=2"]
    assert main(pre) == 0 and main(folds) == 0
    images, folds_csv = work / "cache" / "images.npy", work / "folds.csv"
    before = images.stat().st_mtime_ns, folds_csv.stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(pre) == 0 and main(folds) == 0
    assert caplog.text.count("inputs unchanged since the last run; nothing to do") == 2
    assert (images.stat().st_mtime_ns, folds_csv.stat().st_mtime_ns) == before

    # A changed setting or --force redoes the stage.
    assert main([*folds[:-1], "folds.n_folds=3"]) == 0
    assert folds_csv.stat().st_mtime_ns != before[1]
    assert main([*pre, "--force"]) == 0
    assert images.stat().st_mtime_ns != before[0]


def test_changed_photo_invalidates_the_cache(tmp_path):
    data = write_layout(tmp_path / "data", [("a.jpg", "w_1"), ("b.jpg", "w_1")], ["t.jpg"])
    work = tmp_path / "work"
    pre = ["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.image_size=[8,16]"]
    assert main(pre) == 0
    before = (work / "cache" / "images.npy").stat().st_mtime_ns
    from PIL import Image

    Image.new("RGB", (50, 20), (200, 0, 0)).save(data / "train" / "a.jpg")
    assert main(pre) == 0
    assert (work / "cache" / "images.npy").stat().st_mtime_ns != before
