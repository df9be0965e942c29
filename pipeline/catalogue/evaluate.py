"""How well matching works on the user's own catalogue: its confirmed photos are replayed in arrival
order (their dates, else a seeded shuffle); each photo queries the catalogue as it stood before it
(the confirmed photos replayed earlier), scored by the fold networks that never trained on it:

    a photo of the bundle's data in validation fold k   fold model k alone (of each model)
    a photo added to the catalogue later                every fold model (none trained on it)
    a photo every fold model trained on (fold -1)       not a query; it still joins the gallery

A returning individual's rank (1/5/10) measures matching; the reviewer's effort is the number of
candidates to look at to find 95% of the matches; P(new individual) is judged on the first sightings
(AUC against returning photos, and its reliability by deciles).

Encounters (photos.encounter): an encounter's photos are replayed together, each against the catalogue
as it stood before the encounter (never against its own encounter's photos, which would flatter
photo-level ranking with near-copies). Photo-level: each photo ranked alone. Encounter-level: each
candidate's best score over the encounter's photos (as the queue ranks an encounter, encounters.py);
an encounter whose photos show several individuals counts once for each of them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import columns as C
from pipeline.bundle import NamedDescriptors
from pipeline.decision.calibration import auc, reliability
from pipeline.retrieval.local.extract import empty_features
from pipeline.identify import search_fused
from pipeline.retrieval.retriever import Gallery, Retriever
from pipeline.decision.threshold import top_whales


def replay_order(photos: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    dates = pd.to_datetime(photos["date"], errors="coerce")
    if len(photos) and dates.notna().all():
        return photos.assign(_date=dates).sort_values(["_date", "arrival"], kind="stable").drop(columns="_date")
    order = np.random.default_rng(seed).permutation(len(photos))
    return photos.iloc[order]


def encounters_together(photos: pd.DataFrame) -> pd.DataFrame:
    """The replay order with each encounter's photos moved up to its first photo (stable otherwise);
    adds `unit`: the encounter, or the photo's own hash when it has none."""
    unit = photos["encounter"].where(photos["encounter"].notna() & (photos["encounter"] != ""), photos["hash"])
    first = pd.Series(np.arange(len(photos)), index=photos.index).groupby(unit.to_numpy()).transform("min")
    return photos.assign(unit=unit.to_numpy(), _first=first.to_numpy()).sort_values("_first", kind="stable") \
        .drop(columns="_first").reset_index(drop=True)


def best_over_photos(tables: list[pd.DataFrame], key: str) -> pd.DataFrame:
    """One score table (Image = key) from several photos' tables: each candidate's best score, best first."""
    both = pd.concat(tables, ignore_index=True)
    best = both.groupby(C.ID, as_index=False)[C.SCORE].max().sort_values(C.SCORE, ascending=False, kind="stable")
    return best.assign(**{C.IMAGE: key})[[C.IMAGE, C.ID, C.SCORE]].reset_index(drop=True)


def rank_of(table: pd.DataFrame, truth) -> int | None:
    ranked = table.sort_values(C.SCORE, ascending=False, kind="stable")[C.ID].tolist()
    return ranked.index(truth) + 1 if truth in ranked else None


def evaluate(catalogue, seed: int = 0, limit: int | None = None) -> dict:
    from pipeline.data.folds import read_folds

    store, bundle = catalogue.store, catalogue.matcher.bundle
    photos = pd.read_sql_query("SELECT hash, original_name, date, arrival, individual_id, source, encounter FROM "
                               "photos WHERE status = 'confirmed'", store.db)
    photos = encounters_together(replay_order(photos, seed).reset_index(drop=True))
    hashes = photos["hash"].tolist()
    folds_file = bundle.manifest.get("folds_file")
    fold_of = {}
    if folds_file:
        folds = read_folds(folds_file)
        fold_of = dict(zip(folds[C.IMAGE], folds[C.FOLD].astype(int)))
    vectors = {}
    for model in bundle.models:
        for fold in model.checkpoints:
            _, _, v = store.embeddings(model.name, fold, hashes, status=None)
            vectors[(model.name, fold)] = v
    keypoints = {int(m.config["knn"]["local_keypoints"]) for m in bundle.models if m.config["knn"].get("local")}
    local = {k: store.descriptors(k, hashes) for k in keypoints}
    retrievers = {}
    for model in bundle.models:
        knn = model.config["knn"]
        source = NamedDescriptors(local[int(knn["local_keypoints"])]) if knn.get("local") else None
        retrievers[model.name] = Retriever.from_config(model.config, descriptors=source)
    ids = photos["individual_id"].to_numpy(dtype=object)
    names = np.asarray(hashes, dtype=object)

    def fused_scores(i: int, start: int) -> pd.DataFrame | None:
        """Photo i against the photos before `start` (its encounter's first), by the fold models that never
        trained on it; None when every fold model trained on it."""
        digest, source = hashes[i], photos["source"].iloc[i]
        fold = fold_of.get(photos["original_name"].iloc[i]) if source == "import" else None
        if fold is not None and fold < 0:
            return None
        searches, query = {}, {}
        for model in bundle.models:
            use = [fold] if fold is not None and fold in model.checkpoints else sorted(model.checkpoints)
            searches[model.name] = [(f, Gallery(vectors[(model.name, f)][:start], ids[:start], names[:start]))
                                    for f in use]
            query.update({(model.name, f): vectors[(model.name, f)][i:i + 1] for f in use})
        features = {k: [found.get(digest, empty_features())] for k, found in local.items()}
        fused, _ = search_fused(retrievers, searches, [m.weight for m in bundle.models], query, features, [digest])
        return fused[fused[C.IMAGE] == digest]

    def p_new(table: pd.DataFrame, key: str) -> float:
        _, vals = top_whales(table, [key])
        return float(bundle.p_new(vals[:, 0])[0])

    rows, units = [], []
    seen: set[str] = set()
    starts = photos.groupby("unit", sort=False).indices
    for unit, members in starts.items():
        start = int(members[0])
        if limit is not None and len(rows) >= limit:
            break
        tables = []
        for i in members:
            if start == 0:
                break  # nothing to search yet
            table = fused_scores(int(i), start)
            if table is None:
                continue
            tables.append(table)
            rows.append({"hash": hashes[i], "returning": ids[i] in seen, "rank": rank_of(table, ids[i]),
                         "p_new": p_new(table, hashes[i])})
        if tables:
            together = best_over_photos(tables, unit)
            truths = list(dict.fromkeys(ids[int(i)] for i in members))
            for truth in truths:
                units.append({"hash": unit, "returning": truth in seen, "rank": rank_of(together, truth),
                              "p_new": p_new(together, unit), "photos": len(tables), "individuals": len(truths)})
        seen.update(ids[int(i)] for i in members)
    columns = ["hash", "returning", "rank", "p_new"]
    report = summarise(pd.DataFrame(rows, columns=columns))
    units = pd.DataFrame(units, columns=[*columns, "photos", "individuals"])
    report["encounter_level"] = {**summarise(units[columns]),
                                 "encounters": int(units["hash"].nunique()),
                                 "of_several_photos": int(units.loc[units["photos"] > 1, "hash"].nunique()),
                                 "of_several_individuals": int(units.loc[units["individuals"] > 1, "hash"].nunique())}
    return report


def summarise(table: pd.DataFrame) -> dict:
    back = table[table["returning"]]
    ranks = back["rank"].to_numpy(dtype=float)  # NaN: not among the kept candidates
    found = np.nan_to_num(ranks, nan=np.inf)
    out = {"queries": int(len(table)), "returning": int(len(back)), "first_sightings": int((~table["returning"]).sum())}
    for k in (1, 5, 10):
        out[f"rank{k}"] = float((found <= k).mean()) if len(back) else float("nan")
    finite = np.sort(found[np.isfinite(found)])
    need = int(np.ceil(0.95 * len(back))) if len(back) else 0
    out["candidates_for_95pct"] = int(finite[need - 1]) if 0 < need <= len(finite) else None
    # When 95% is out of reach, how far the kept candidates do get.
    out["found_in_kept"] = float(len(finite) / len(back)) if len(back) else float("nan")
    out["p_new_auc"] = auc(table["p_new"].to_numpy(), (~table["returning"]).to_numpy())
    out["reliability"] = reliability(table["p_new"].to_numpy(), (~table["returning"]).to_numpy()).round(4) \
        .to_dict(orient="records") if len(table) else []
    return out


def format_report(report: dict) -> str:
    lines = [f"queries {report['queries']}: {report['returning']} returning individuals, "
             f"{report['first_sightings']} first sightings",
             f"rank-1 {report['rank1']:.4f}  rank-5 {report['rank5']:.4f}  rank-10 {report['rank10']:.4f} "
             "(returning individuals)",
             "candidates to look at to find 95% of the matches: "
             + (str(report["candidates_for_95pct"]) if report["candidates_for_95pct"] else
                f"more than are kept ({report['found_in_kept']:.1%} of the matches are among them)"),
             f"P(new individual): AUC {report['p_new_auc']:.4f} for first sightings against returning photos",
             "reliability (deciles of P): photos  mean P  share new"]
    for r in report["reliability"]:
        lines.append(f"  {r['photos']:>6}  {r['mean_p_new']:.3f}  {r['share_new']:.3f}")
    enc = report.get("encounter_level")
    if enc and enc["of_several_photos"]:
        lines += [f"by encounter ({enc['encounters']} encounters, {enc['of_several_photos']} of several photos, "
                  f"{enc['of_several_individuals']} showing several individuals; {enc['returning']} returning):",
                  f"  photo-level      rank-1 {report['rank1']:.4f}  rank-5 {report['rank5']:.4f}  "
                  f"rank-10 {report['rank10']:.4f}  ({report['returning']} returning photos)",
                  f"  encounter-level  rank-1 {enc['rank1']:.4f}  rank-5 {enc['rank5']:.4f}  "
                  f"rank-10 {enc['rank10']:.4f}  (each candidate's best score over the encounter's photos)"]
    return "\n".join(lines)
