"""Bad input through the `whale` command: exit code 2, a message naming the file and row or key, and
nothing half-written in WORK or submissions/."""
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from tests.conftest import REPO, bomb_png, write_layout

CONFIGS = str(REPO / "configs")
ROWS = [(f"{i}.jpg", f"w_{i % 4}") for i in range(12)] + [("n.jpg", "new_whale")]


def no_partial_output(work):
    return not work.exists() or not list(work.rglob("*.tmp-*"))


def test_unknown_config_key_in_override(tmp_path, capsys):
    data = write_layout(tmp_path / "data", ROWS, ["t.jpg"])
    assert main(["preprocess", "--data", str(data), "--work", str(tmp_path / "w"), "--set", "preprocess.size=3"]) == 2
    assert "unknown config key 'preprocess.size'" in capsys.readouterr().err
    assert not (tmp_path / "w" / "cache" / "images.npy").exists()


def test_unknown_model_config(tmp_path, capsys):
    assert main(["train", "--work", str(tmp_path), "--configs", CONFIGS, "--model", "nope"]) == 2
    assert "no model config 'nope'" in capsys.readouterr().err


def test_only_new_whale_in_train(tmp_path, capsys):
    data = write_layout(tmp_path / "data", [("a.jpg", "new_whale"), ("b.jpg", "new_whale")], ["t.jpg"])
    work = tmp_path / "w"
    assert main(["preprocess", "--data", str(data), "--work", str(work)]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv")]) == 2
    assert "only new_whale" in capsys.readouterr().err
    assert not (work / "folds.csv").exists()


@pytest.fixture()
def embedded(tmp_path):
    """A cache, folds and hand-made embeddings for model 'hand' (no training needed)."""
    data = write_layout(tmp_path / "data", ROWS, ["t1.jpg", "t2.jpg"])
    work = tmp_path / "w"
    assert main(["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.image_size=[8,8]"]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), "--set", "folds.n_folds=2"]) == 0
    rng = np.random.default_rng(0)
    for fold in (0, 1):
        out = work / "embeddings" / "hand" / f"fold{fold}"
        out.mkdir(parents=True)
        names = [r[0] for r in ROWS]
        np.save(out / "train.npy", rng.normal(size=(len(names), 4)).astype(np.float32))
        np.save(out / "test.npy", rng.normal(size=(2, 4)).astype(np.float32))
        pd.DataFrame({"Image": names + ["t1.jpg", "t2.jpg"], "split": ["train"] * len(names) + ["test"] * 2,
                      "row": list(range(len(names))) + [0, 1]}).to_csv(out / "index.csv", index=False)
    (tmp_path / "configs" / "models").mkdir(parents=True)
    (tmp_path / "configs" / "models" / "hand.yaml").write_text("model:\n  backbone: test_resnet\n")
    return work, tmp_path / "configs"


def knn(work, configs):
    return main(["knn", "--work", str(work), "--configs", str(configs), "--model", "hand",
                 "--folds-file", str(work / "folds.csv")])


def test_hand_made_embeddings_run(embedded):
    work, configs = embedded
    assert knn(work, configs) == 0
    assert (work / "predictions" / "hand" / "threshold.json").is_file()


def test_nan_in_embeddings(embedded, capsys):
    work, configs = embedded
    path = work / "embeddings" / "hand" / "fold1" / "train.npy"
    x = np.load(path)
    x[5, 2] = np.inf
    np.save(path, x)
    assert knn(work, configs) == 2
    err = capsys.readouterr().err
    assert "fold1/train.npy" in err and "NaN or Inf (first: row 5)" in err
    assert not (work / "predictions" / "hand" / "oof.parquet").exists() and no_partial_output(work)


def test_embeddings_of_another_image_set(embedded, capsys):
    work, configs = embedded
    index = work / "embeddings" / "hand" / "fold0" / "index.csv"
    df = pd.read_csv(index)
    df.loc[3, "Image"] = "someone_else.jpg"
    df.to_csv(index, index=False)
    assert knn(work, configs) == 2
    err = capsys.readouterr().err
    assert "fold0/index.csv" in err and "have no embedding (first: 3.jpg)" in err and "another image set" in err


def test_folds_file_where_a_whale_is_wholly_in_one_fold_but_claimed_known(embedded, capsys):
    work, configs = embedded
    folds = pd.read_csv(work / "folds.csv", keep_default_na=False)
    whale = folds.loc[0, "Id"]
    folds.loc[folds["Id"] == whale, "fold"] = 0  # every photo of this whale now in fold 0...
    folds.loc[folds["Id"] == whale, "truth"] = whale  # ...yet still claimed matchable
    folds.to_csv(work / "folds.csv", index=False)
    assert knn(work, configs) == 2
    err = capsys.readouterr().err
    assert "folds.csv, row 2" in err and "should be 'new_whale'" in err


def test_stale_folds_file_from_other_data(embedded, capsys):
    work, configs = embedded
    folds = pd.read_csv(work / "folds.csv", keep_default_na=False)
    folds.loc[len(folds)] = ["ghost.jpg", "w_9", -1, "new_whale"]
    folds.to_csv(work / "folds.csv", index=False)
    assert knn(work, configs) == 2
    assert "'ghost.jpg' is not a cached train photo" in capsys.readouterr().err


def test_submit_without_predictions(embedded, capsys):
    work, _ = embedded
    out = work.parent / "submissions" / "x.csv"
    assert main(["submit", "--work", str(work), "--folds-file", str(work / "folds.csv"), "--out", str(out)]) == 2
    assert "predictions not found" in capsys.readouterr().err
    assert not out.exists()


def _truncate(path):
    from PIL import Image

    Image.new("RGB", (300, 200), (1, 2, 3)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:400])


def _one_pixel(path):
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)


LAYOUT_CASES = {
    "missing train.csv": (lambda d: (d / "train.csv").unlink(), r"train.csv: file not found"),
    "wrong header": (lambda d: (d / "train.csv").write_text("Image,Whale\na.jpg,w_1\n"), "train.csv, row 1: header is"),
    "empty train.csv": (lambda d: (d / "train.csv").write_text(""), "train.csv, row 1: file is empty"),
    "Id with spaces": (lambda d: (d / "train.csv").write_text("Image,Id\n0.jpg,w 1\n"),
                       "train.csv, row 2: Id 'w 1' contains white space"),
    "duplicate Image": (lambda d: (d / "train.csv").write_text("Image,Id\n0.jpg,w_1\n0.jpg,w_2\n"),
                        "train.csv, row 3: duplicate Image '0.jpg'"),
    "photo missing on disk": (lambda d: (d / "train" / "3.jpg").unlink(), "train.csv, row 5: photo '3.jpg' is listed"),
    "not an image": (lambda d: (d / "train" / "2.jpg").write_text("hello"), "train.csv, row 4: photo"),
    "truncated JPEG": (lambda d: _truncate(d / "train" / "1.jpg"), "train.csv, row 3: photo"),
    "decompression bomb": (lambda d: (d / "train" / "2.jpg").write_bytes(bomb_png()),
                           "train.csv, row 4: photo"),
    "1x1 photo": (lambda d: _one_pixel(d / "train" / "0.jpg"), "train.csv, row 2: photo"),
    "test photo listed but missing": (lambda d: (d / "test" / "t.jpg").unlink(), "sample_submission.csv, row 2: photo 't.jpg'"),
    "sample_submission.csv missing": (lambda d: (d / "sample_submission.csv").unlink(),
                                      "sample_submission.csv: file not found"),
}


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_bad_layout_exits_2_names_file_and_row_and_writes_nothing(tmp_path, capsys, case):
    data = write_layout(tmp_path / "data", ROWS, ["t.jpg"])
    mutate, message = LAYOUT_CASES[case]
    mutate(data)
    work = tmp_path / "w"
    assert main(["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.workers=1"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (work / "cache" / "images.npy").exists() and not (work / "cache" / "manifest.parquet").exists()
    assert no_partial_output(work)
