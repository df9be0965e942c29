"""Per-photo precision under the cross-validated new_whale policy, and the members' per-photo upper bound,
recomputed from the labels the policy gives each photo."""
import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.decision.evaluation import best_member_bound, cross_validate, fold_policies, query_precisions
from pipeline.metrics import average_precision_at_5
from pipeline.decision.policy import NewWhalePolicy

WHALES = [f"w_{i}" for i in range(6)]


def _folds(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.choice(WHALES + [C.NEW_WHALE] * 2, size=30)
    return pd.DataFrame({C.IMAGE: [f"q{i}.jpg" for i in range(30)], C.ID: truth, C.FOLD: np.arange(30) % 3,
                         C.TRUTH: truth})


def _scores(folds: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A score table that often ranks the truth high, so the threshold matters."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, truth, fold in zip(folds[C.IMAGE], folds[C.TRUTH], folds[C.FOLD]):
        for whale in WHALES:
            rows.append((name, whale, rng.uniform(0, 1) + (0.6 if whale == truth else 0.0), fold))
    return pd.DataFrame(rows, columns=[C.IMAGE, C.ID, C.SCORE, C.FOLD])


def _by_hand(oof: pd.DataFrame, folds: pd.DataFrame) -> pd.Series:
    """Each photo's AP@5 of the five labels its fold's policy predicts."""
    policies = fold_policies(oof, folds, NewWhalePolicy())
    out = {}
    for k, policy in policies.items():
        mine = folds[folds[C.FOLD] == k]
        for name, truth, labels in zip(mine[C.IMAGE], mine[C.TRUTH], policy.labels(oof, mine[C.IMAGE], WHALES)):
            out[name] = average_precision_at_5(truth, labels)
    return pd.Series(out)


def test_query_precisions_are_the_policys_labels_scored_and_average_to_cv():
    folds = _folds()
    oof = _scores(folds, 1)
    aps = query_precisions(oof, folds, NewWhalePolicy())
    hand = _by_hand(oof, folds)
    assert aps.sort_index().to_numpy() == pytest.approx(hand.sort_index().to_numpy())
    assert aps.mean() == pytest.approx(cross_validate(oof, folds, NewWhalePolicy())["map5"], abs=1e-4)


def test_best_member_bound_takes_each_photos_best_member():
    folds = _folds()
    a, b = _scores(folds, 1), _scores(folds, 2)
    bound = best_member_bound([a, b], folds, NewWhalePolicy())
    hand = pd.concat([_by_hand(a, folds), _by_hand(b, folds)], axis=1).max(axis=1)
    assert bound["map5"] == pytest.approx(hand.mean(), abs=1e-4)
    fold_of = folds.set_index(C.IMAGE)[C.FOLD]
    for f in bound["folds"]:
        assert f["map5"] == pytest.approx(hand[fold_of.loc[hand.index].to_numpy() == f["fold"]].mean(), abs=1e-4)
    cvs = [cross_validate(t, folds, NewWhalePolicy())["map5"] for t in (a, b)]
    assert bound["map5"] > max(cvs)  # two different members: some photo is better served by the other one
    assert best_member_bound([a, a], folds, NewWhalePolicy())["map5"] == pytest.approx(cvs[0], abs=1e-4)
