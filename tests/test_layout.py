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


def test_train_csv_with_more_columns_reads_as_image_and_id(tmp_path):
    """A lab's train.csv carries date, place, notes...: preprocess reads Image,Id and ignores the rest;
    read_labels_csv keeps them for the catalogue."""
    from pipeline.io.layout import read_labels_csv

    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").write_text("date,Image,notes,Id\n2024-06-01,a.jpg,fin nick,w_1\n,b.jpg,,w_1\n"
                                        ",c.jpg,,new_whale\n")
    layout = read_layout(tmp_path)
    assert list(layout.train.columns) == ["Image", "Id"] and list(layout.train["Id"]) == ["w_1", "w_1", "new_whale"]
    full = read_labels_csv(tmp_path / "train.csv")
    assert full.loc[0, "notes"] == "fin nick" and full.loc[0, "date"] == "2024-06-01"


def test_train_csv_without_an_id_column_is_still_refused(tmp_path):
    write_layout(tmp_path, GOOD, ["t1.jpg"])
    (tmp_path / "train.csv").write_text("Image,whale,date\na.jpg,w_1,2024-06-01\n")
    with pytest.raises(PipelineError, match=r"train\.csv, row 1: header is 'Image,whale,date', expected 'Image,Id' "
                                            r"\(and any other columns\)"):
        read_layout(tmp_path)
