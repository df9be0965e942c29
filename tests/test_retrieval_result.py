"""RetrievalResult (retrieval/result.py): what a search returns and every re-scorer takes and gives back;
checked when built (each query's ids unique, scores best first) and immutable."""
import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.config import DEFAULTS
from pipeline.retrieval.result import RetrievalResult
from pipeline.retrieval.retriever import Gallery, Retriever


def table(images, ids, scores):
    return pd.DataFrame({C.IMAGE: images, C.ID: ids, C.SCORE: np.asarray(scores, np.float32)})


def test_a_result_holds_each_querys_candidates_best_first():
    result = RetrievalResult(table(["a", "a", "b", "b"], ["x", "y", "y", "x"], [0.9, 0.5, 0.8, 0.8]))
    assert result.queries == ("a", "b")
    ids, scores = result.candidates("a")
    assert ids.tolist() == ["x", "y"] and scores.tolist() == pytest.approx([0.9, 0.5])
    assert len(result) == 4 and result.photos is None


def test_unsorted_scores_are_refused():
    with pytest.raises(ValueError, match="query 'b'.*not sorted best first"):
        RetrievalResult(table(["a", "a", "b", "b"], ["x", "y", "x", "y"], [0.9, 0.5, 0.1, 0.7]))
    # Rows of a query need not be next to each other; their order within the query is what counts.
    with pytest.raises(ValueError, match="query 'a'"):
        RetrievalResult(table(["a", "b", "a"], ["x", "x", "y"], [0.2, 0.9, 0.3]))
    RetrievalResult(table(["a", "b", "a"], ["x", "x", "y"], [0.3, 0.9, 0.2]))


def test_duplicate_ids_within_a_query_are_refused():
    with pytest.raises(ValueError, match="query 'a' lists candidate 'x' twice"):
        RetrievalResult(table(["a", "a", "b"], ["x", "x", "x"], [0.9, 0.5, 0.4]))
    RetrievalResult(table(["a", "b"], ["x", "x"], [0.9, 0.4]))  # the same whale for two queries is fine


def test_missing_columns_are_refused():
    with pytest.raises(ValueError, match="score"):
        RetrievalResult(pd.DataFrame({C.IMAGE: ["a"], C.ID: ["x"]}))


def test_a_result_cannot_be_changed_through_its_tables_or_attributes():
    source = table(["a", "a"], ["x", "y"], [0.9, 0.5])
    result = RetrievalResult(source)
    source.loc[0, C.SCORE] = -1.0  # the table it was built from
    out = result.scores
    out.loc[0, C.SCORE] = -2.0  # the table it handed out
    assert result.scores[C.SCORE].tolist() == pytest.approx([0.9, 0.5])
    with pytest.raises(AttributeError):
        result._scores = out
    with pytest.raises(AttributeError):
        result.anything = 1


def test_rescored_keeps_the_photos_of_the_candidates_it_keeps():
    photos = pd.DataFrame({C.IMAGE: ["a", "a", "a"], C.ID: ["x", "y", "x"], "photo": ["p1", "p2", "p3"],
                           "similarity": [0.9, 0.5, 0.4]})
    result = RetrievalResult(table(["a", "a"], ["x", "y"], [0.9, 0.5]), photos)
    kept = result.rescored(table(["a"], ["x"], [0.7]))
    assert kept.photos["photo"].tolist() == ["p1", "p3"]
    assert result.photos["photo"].tolist() == ["p1", "p2", "p3"]  # the original is untouched
    with pytest.raises(ValueError):
        result.rescored(table(["a", "a"], ["x", "y"], [0.1, 0.2]))


def test_search_returns_a_result_with_the_candidates_photos():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(24, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gallery = Gallery(vectors, np.array([f"w{i % 6}" for i in range(24)], dtype=object),
                      np.array([f"p{i}" for i in range(24)], dtype=object))
    for aggregation in ("max", "centroid"):
        knn = {**DEFAULTS["knn"], "local": False, "aggregation": aggregation, "keep_top": 4}
        result = Retriever(knn).search(gallery, vectors[:3], ["a", "b", "c"], photos=2)
        assert isinstance(result, RetrievalResult) and result.queries == ("a", "b", "c")
        assert set(zip(result.photos[C.IMAGE], result.photos[C.ID])) == set(zip(result.scores[C.IMAGE],
                                                                                result.scores[C.ID]))
