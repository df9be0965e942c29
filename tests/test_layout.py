import pytest

from pipeline.errors import PipelineError
from pipeline.io.layout import read_layout
from tests.conftest import write_layout

GOOD = [("a.jpg", "w_1"), ("b.jpg", "w_1"), ("c.jpg", "new_whale")]


def test_good_layout_reads(tmp_path):
    layout = read_layout(write_layout(tmp_path, GOOD, ["t1.jpg"]))
    assert list(layout.train["Image"]) == ["a.jpg", "b.jpg", "c.jpg"]
    assert list(layout.test["Image"]) == ["t1.jpg"]


def test_missing_train_csv(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").unlink()
    with pytest.raises(PipelineError, match=r"train\.csv: file not found"):
        read_layout(tmp_path)


def test_wrong_header_names_row_1(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").write_text("image,whale\na.jpg,w_1\n")
    with pytest.raises(PipelineError, match=r"train\.csv, row 1: header is 'image,whale'"):
        read_layout(tmp_path)


def test_empty_train_csv(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").write_text("")
    with pytest.raises(PipelineError, match=r"train\.csv, row 1: file is empty"):
        read_layout(tmp_path)


def test_header_only(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").write_text("Image,Id\n")
    with pytest.raises(PipelineError, match=r"row 2: no rows after the header"):
        read_layout(tmp_path)


def test_id_with_spaces_names_its_row(tmp_path):
    write_layout(tmp_path, [("a.jpg", "w_1"), ("b.jpg", "w 2")], ["t1.jpg"])
    with pytest.raises(PipelineError, match=r"train\.csv, row 3: Id 'w 2' contains white space"):
        read_layout(tmp_path)


def test_duplicate_image_names_both_rows(tmp_path):
    write_layout(tmp_path, [("a.jpg", "w_1"), ("b.jpg", "w_2"), ("a.jpg", "w_3")], ["t1.jpg"])
    with pytest.raises(PipelineError, match=r"row 4: duplicate Image 'a.jpg' \(first at row 2\)"):
        read_layout(tmp_path)


def test_listed_photo_missing_on_disk(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train" / "b.jpg").unlink()
    with pytest.raises(PipelineError, match=r"train\.csv, row 3: photo 'b.jpg' is listed but missing"):
        read_layout(tmp_path)


def test_test_photo_listed_but_missing_is_an_error(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg", "t2.jpg"])
    (tmp_path / "test" / "t2.jpg").unlink()
    with pytest.raises(PipelineError, match=r"sample_submission\.csv, row 3: photo 't2.jpg'"):
        read_layout(tmp_path)


def test_unlisted_test_photo_is_a_warning(tmp_path, caplog):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "test" / "extra.jpg").write_bytes((tmp_path / "test" / "t1.jpg").read_bytes())
    layout = read_layout(tmp_path)
    assert list(layout.test["Image"]) == ["t1.jpg"]
    assert "not listed in sample_submission.csv" in caplog.text


def test_missing_data_folder(tmp_path):
    with pytest.raises(PipelineError, match="data folder not found"):
        read_layout(tmp_path / "nope")
