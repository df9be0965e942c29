import pytest

from pipeline.metrics import average_precision_at_5, map_at_5


@pytest.mark.parametrize("truth, predicted, expected", [
    ("a", ["a", "b", "c", "d", "e"], 1.0),
    ("c", ["a", "b", "c", "d", "e"], 1 / 3),
    ("e", ["a", "b", "c", "d", "e"], 1 / 5),
    ("z", ["a", "b", "c", "d", "e"], 0.0),
    ("f", ["a", "b", "c", "d", "e", "f"], 0.0),  # only the first five count
    ("b", ["a", "a", "b"], 1 / 3),  # repeated labels still take a place
    ("a", ["a", "a", "a"], 1.0),  # and never earn twice
    ("b", ["a", "b"], 0.5),  # fewer than five predictions
    ("new_whale", ["w_1", "new_whale", "w_2", "w_3", "w_4"], 0.5),
])
def test_average_precision_by_hand(truth, predicted, expected):
    assert average_precision_at_5(truth, predicted) == pytest.approx(expected)


def test_map_is_the_mean_over_images():
    truths = ["a", "b", "c", "d"]
    preds = [["a"], ["x", "b"], ["x", "y", "z"], ["x", "y", "z", "w", "d"]]
    assert map_at_5(truths, preds) == pytest.approx((1 + 0.5 + 0 + 0.2) / 4)


def test_map_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        map_at_5(["a"], [["a"], ["b"]])
