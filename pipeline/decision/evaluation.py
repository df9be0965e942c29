"""Cross-validated MAP@5 of out-of-fold predictions, per fold and overall, under a new_whale policy.

Strategy cv: each fold is scored at the threshold fitted on the *other* folds, so no fold's score comes
from a threshold tuned on itself (with a single fold the in-sample figure is all there is, and the
report says so). Strategy share: each fold at the threshold that puts new_whale first for the share
of its own queries (no labels). Used by the cv and ensemble stages and the report."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.metrics import map_at_5
from pipeline.decision.policy import NewWhalePolicy
from pipeline.decision.threshold import map5_by_threshold, precisions_by_threshold, top_whales


def covered_queries(oof: pd.DataFrame, folds: pd.DataFrame) -> tuple[list[int], pd.DataFrame]:
    """(the folds `oof` has predictions for, their validation queries)."""
    done = sorted(int(f) for f in oof[C.FOLD].unique())
    return done, folds[folds[C.FOLD].isin(done)]


def fold_policies(oof: pd.DataFrame, folds: pd.DataFrame, policy: NewWhalePolicy) -> dict[int, NewWhalePolicy]:
    """The policy that scores each fold: fitted on the other folds (cv) or calibrated on its own scores (share)."""
    done, queries = covered_queries(oof, folds)
    out = {}
    for k in done:
        mine = queries[queries[C.FOLD] == k]
        if policy.strategy == "share":
            out[k] = policy.calibrate(oof, mine[C.IMAGE])
        else:
            others = queries[queries[C.FOLD] != k] if len(done) > 1 else mine
            out[k] = policy.fit(oof, others)
    return out


def scored_folds(oof: pd.DataFrame, folds: pd.DataFrame, policy: NewWhalePolicy):
    """For each fold of `oof`: (fold, its validation queries, their five best whales and scores, the
    threshold it is scored at), the threshold from fold_policies."""
    done, queries = covered_queries(oof, folds)
    policies = fold_policies(oof, folds, policy)
    for k in done:
        mine = queries[queries[C.FOLD] == k]
        ids, vals = top_whales(oof, mine[C.IMAGE])
        yield k, mine, ids, vals, policies[k].threshold_for(vals)


def cross_validate(oof: pd.DataFrame, folds: pd.DataFrame, policy: NewWhalePolicy) -> dict:
    done, queries = covered_queries(oof, folds)
    queries = queries.reset_index(drop=True)
    per_fold, ap_sum = [], 0.0
    for k, mine, ids, vals, t in scored_folds(oof, folds, policy):
        score = float(map5_by_threshold(ids, vals, mine[C.TRUTH], [t])[0])
        ap_sum += score * len(mine)
        per_fold.append({"fold": k, "queries": int(len(mine)), "threshold": round(t, 4), "map5": round(score, 4),
                         "new_whale_share": round(float((mine[C.TRUTH] == C.NEW_WHALE).mean()), 3)})
    overall = policy.fit(oof, queries)
    ids, vals = top_whales(oof, queries[C.IMAGE])
    truths = queries[C.TRUTH].to_numpy()
    return {
        "folds": per_fold, "map5": round(ap_sum / len(queries), 4), "queries": int(len(queries)),
        "threshold_nested": len(done) > 1 or policy.strategy == "share", "strategy": policy.strategy,
        "threshold": round(overall.threshold_for(vals), 4), "map5_in_sample": round(overall.fitted["map5_in_sample"], 4),
        # new_whale never first (threshold below every score) and always first (above every score).
        "map5_never_new_whale_first": round(float(map5_by_threshold(ids, vals, truths, [-np.inf])[0]), 4),
        "map5_always_new_whale_first": round(float(map5_by_threshold(ids, vals, truths, [np.inf])[0]), 4),
        "new_whale_only_baseline": round(map_at_5(truths, [[C.NEW_WHALE]] * len(truths)), 4),
        "curve": overall.fitted["curve"],
    }


def query_precisions(oof: pd.DataFrame, folds: pd.DataFrame, policy: NewWhalePolicy) -> pd.Series:
    """Each validation photo's average precision at 5 (indexed by Image), its fold scored at the policy
    that cross_validate uses for it: their mean is cross_validate's MAP@5."""
    parts = [pd.Series(precisions_by_threshold(ids, vals, mine[C.TRUTH], [t])[:, 0], index=mine[C.IMAGE].to_numpy())
             for _, mine, ids, vals, t in scored_folds(oof, folds, policy)]
    return pd.concat(parts)


def best_member_bound(oofs: list[pd.DataFrame], folds: pd.DataFrame, policy: NewWhalePolicy) -> dict:
    """MAP@5 if each validation photo took the answer of whichever member scores it best: an oracle,
    not a method. No rule that picks one member's answer per photo does better; fusion and the
    classifier rank anew and are not bound by it, but a bound close to the best member says the members
    seldom differ where it matters. Per fold and overall, as cross_validate reports them."""
    aps = pd.concat([query_precisions(o, folds, policy) for o in oofs], axis=1).max(axis=1)
    fold_of = folds.set_index(C.IMAGE)[C.FOLD]
    per_fold = aps.groupby(fold_of.loc[aps.index].to_numpy()).mean()
    return {"folds": [{"fold": int(k), "map5": round(float(v), 4)} for k, v in per_fold.items()],
            "map5": round(float(aps.mean()), 4)}


def markdown(name: str, report: dict) -> str:
    lines = [f"# Cross-validation: {name}", "",
             f"Out-of-fold MAP@5: **{report['map5']:.4f}** over {report['queries']} validation photos "
             + ("(each fold with new_whale first for the configured share of its queries)."
                if report.get("strategy") == "share" else
                "(each fold at a threshold tuned on the other folds)." if report["threshold_nested"]
                else "(one fold: threshold tuned on the same photos, an optimistic figure)."), "",
             "| fold | queries | new_whale share | threshold | MAP@5 |", "|---:|---:|---:|---:|---:|"]
    for f in report["folds"]:
        lines.append(f"| {f['fold']} | {f['queries']} | {f['new_whale_share']:.3f} | {f['threshold']:.4f} | {f['map5']:.4f} |")
    lines += ["", f"- Threshold fitted on all folds (used for test): {report['threshold']:.4f}, "
                  f"MAP@5 there {report['map5_in_sample']:.4f} (in-sample).",
              f"- new_whale never first: {report['map5_never_new_whale_first']:.4f}; always first: "
              f"{report['map5_always_new_whale_first']:.4f}; only new_whale: {report['new_whale_only_baseline']:.4f}.",
              "", "## MAP@5 against the new_whale threshold", "", "| threshold | MAP@5 |", "|---:|---:|"]
    curve = pd.DataFrame(report["curve"])
    for _, row in curve.iloc[:: max(1, len(curve) // 20)].iterrows():
        lines.append(f"| {row['threshold']:.4f} | {row['map5']:.4f} |")
    return "\n".join(lines) + "\n"
