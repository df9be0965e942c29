import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.data.folds import make_folds, summarise
from pipeline.errors import PipelineError

from tests.conftest import SHARED_DATA

REAL_LABELS = SHARED_DATA / "humpback_labels" / "train.csv"


def synthetic_labels(seed=0, whales=300, new=400):
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(whales):
        rows += [f"w_{w:04d}"] * int(min(20, rng.zipf(1.8)))
    rows += [C.NEW_WHALE] * new
    return pd.DataFrame({C.IMAGE: [f"{i}.jpg" for i in range(len(rows))], C.ID: rows})


def check_invariants(train, folds, n_folds, share):
    assert list(folds[C.IMAGE]) == list(train[C.IMAGE])  # every photo exactly once, order kept
    assert set(folds[C.FOLD]) <= set(range(n_folds)) | {C.TRAIN_ONLY}
    for k in range(n_folds):
        val = folds[folds[C.FOLD] == k]
        training = folds[folds[C.FOLD] != k]
        train_whales = set(training[C.ID])
        # A known truth always has a photo of its whale in the fold's training part...
        known = val[val[C.TRUTH] != C.NEW_WHALE]
        assert (known[C.TRUTH] == known[C.ID]).all()
        assert set(known[C.ID]) <= train_whales
        # ...and a new_whale truth never has one.
        unseen = val[(val[C.TRUTH] == C.NEW_WHALE) & (val[C.ID] != C.NEW_WHALE)]
        assert not set(unseen[C.ID]) & train_whales
    # Known whales are never train-only; fold sizes are balanced.
    assert (folds.loc[folds[C.FOLD] == C.TRAIN_ONLY, C.ID] == C.NEW_WHALE).all()
    sizes = folds[folds[C.FOLD] >= 0][C.FOLD].value_counts()
    assert sizes.max() - sizes.min() <= max(3, 0.05 * sizes.mean())
    summary = summarise(folds)
    assert (abs(summary["new_whale_share"] - share) < 0.05).all(), summary


@pytest.mark.parametrize("n_folds, share", [(5, 0.28), (3, 0.35), (4, 0.2)])
def test_fold_invariants(n_folds, share):
    train = synthetic_labels()
    folds = make_folds(train, n_folds, share, holdout_whale_share=0.1, seed=1)
    check_invariants(train, folds, n_folds, share)


def test_holdout_whales_are_wholly_in_one_fold():
    train = synthetic_labels()
    folds = make_folds(train, 5, 0.28, holdout_whale_share=0.3, seed=2)
    multi = folds[folds[C.ID] != C.NEW_WHALE].groupby(C.ID)
    held = [w for w, g in multi if len(g) >= 2 and g[C.FOLD].nunique() == 1]
    assert len(held) == pytest.approx(0.3 * sum(1 for _, g in multi if len(g) >= 2), abs=1)
    assert (folds[folds[C.ID].isin(held)][C.TRUTH] == C.NEW_WHALE).all()


def test_folds_are_reproducible_and_seeded():
    train = synthetic_labels()
    a, b = make_folds(train, seed=5), make_folds(train, seed=5)
    assert a.equals(b)
    assert not a[C.FOLD].equals(make_folds(train, seed=6)[C.FOLD])


def test_only_new_whale_is_an_error():
    train = pd.DataFrame({C.IMAGE: ["a.jpg", "b.jpg"], C.ID: [C.NEW_WHALE] * 2})
    with pytest.raises(PipelineError, match="only new_whale"):
        make_folds(train)


@pytest.mark.skipif(not REAL_LABELS.is_file(), reason="real humpback label file not present")
def test_real_competition_labels():
    train = pd.read_csv(REAL_LABELS, dtype=str)
    folds = make_folds(train, 5, 0.28, 0.1, seed=0)
    check_invariants(train, folds, 5, 0.28)
