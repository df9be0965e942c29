"""Long runs, excluded from `make test`; `make test-slow` runs them."""
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.chain import run_chain
from pipeline.io.submission import read_submission, score_submission
from tests.conftest import REPO, SHARED_DATA


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "nyala" / "train.csv").is_file(), reason="../shared/data/nyala not present")
def test_nyala_end_to_end_beats_new_whale_only(tmp_path):
    data = SHARED_DATA / "nyala"
    sub = run_chain(data, tmp_path, "demo_triplet", REPO / "configs", ["preprocess.image_size=[96,192]"], budget=0.5)
    solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
    score = score_submission(read_submission(sub), solution)
    assert score > float((solution[C.ID] == C.NEW_WHALE).mean()) + 0.05
