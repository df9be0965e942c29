import pandas as pd
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path, write_csv
from pipeline.io.submission import check_submission
from pipeline.training.checkpoint import load_checkpoint


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    write_csv(target, pd.DataFrame({"a": [1]}))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


@pytest.mark.parametrize("labels, message", [
    ("new_whale w_1 w_2 w_3", "expected 5 space-separated labels"),
    ("new_whale w_1 w_2 w_3 w_3", "labels repeat"),
    ("new_whale w_1  w_2 w_3", "expected 5"),
])
def test_submission_format_errors_name_the_row(labels, message):
    df = pd.DataFrame({"Image": ["a.jpg", "b.jpg"], "Id": ["new_whale w_1 w_2 w_3 w_4", labels]})
    with pytest.raises(PipelineError, match=rf"sub\.csv, row 3: {message}"):
        check_submission(df, ["a.jpg", "b.jpg"], "sub.csv")


def test_submission_must_cover_every_test_photo():
    df = pd.DataFrame({"Image": ["a.jpg"], "Id": ["new_whale w_1 w_2 w_3 w_4"]})
    with pytest.raises(PipelineError, match="1 rows but sample_submission.csv lists 2"):
        check_submission(df, ["a.jpg", "b.jpg"], "sub.csv")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Evil()}, path)
    with pytest.raises(PipelineError, match=r"evil\.pt: not a loadable checkpoint"):
        load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(PipelineError, match="not a checkpoint of this pipeline"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(PipelineError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
