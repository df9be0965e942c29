"""identify.candidate_lists: the one place a query's candidates (whale, score, photos) are listed, for
identify's answer (the policy's labels) and the catalogue's ranking (the best few)."""
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.identify import candidate_lists

FUSED = pd.DataFrame({C.IMAGE: ["a", "a", "a", "b"], C.ID: ["x", "y", "z", "y"], C.SCORE: [0.9, 0.6, 0.2, 0.8]})
BEST = pd.DataFrame({C.IMAGE: ["a", "a", "a", "b"], C.ID: ["x", "x", "y", "y"], "photo": ["p1", "p2", "p3", "p4"],
                     "similarity": [0.9, 0.8, 0.6, 0.8]})


def test_the_policys_labels_are_listed_with_scores_and_photos():
    lists = candidate_lists(FUSED, BEST, ["a", "b"], [["x", C.NEW_WHALE, "y"], [C.NEW_WHALE, "y"]],
                            photo=lambda p: f"/photos/{p}")
    a, b = lists
    assert [c.whale for c in a] == ["x", C.NEW_WHALE, "y"]
    assert a[0].score == pytest.approx(0.9) and a[0].photos == ["/photos/p1", "/photos/p2"]
    assert a[1].score is None and a[1].photos == []
    assert [(c.whale, c.photos) for c in b] == [(C.NEW_WHALE, []), ("y", ["/photos/p4"])]


def test_without_labels_each_query_lists_its_best_whales():
    lists = candidate_lists(FUSED, BEST, ["a", "b", "c"], top=2)
    assert [[(c.whale, round(c.score, 4), c.photos) for c in row] for row in lists] == [
        [("x", 0.9, ["p1", "p2"]), ("y", 0.6, ["p3"])], [("y", 0.8, ["p4"])], []]
