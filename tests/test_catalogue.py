"""The biologist's catalogue: a scripted workflow through every command, kill -9 at the critical
points, a confirmed photo found again at once, the "already decided" refusal, the bundle, and P(new
individual) calibrated on held-out queries."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from pipeline import columns as C
from pipeline.cli import main
from tests.conftest import REPO, catalogue_db as db


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def near_copy(photo, out, brighter=1.06):
    """The same photo recompressed, slightly brighter: new bytes (a new content hash), same animal."""
    with Image.open(photo) as img:
        ImageEnhance.Brightness(img.convert("RGB")).enhance(brighter).save(out, quality=80)
    return out


def test_init_imports_the_train_set(catalogue, trained_tiny):
    data, _ = trained_tiny
    train = pd.read_csv(data / "train.csv")
    with db(catalogue) as con:
        confirmed = con.execute("SELECT COUNT(*) FROM photos WHERE status = 'confirmed'").fetchone()[0]
        unidentified = con.execute("SELECT COUNT(*) FROM photos WHERE status = 'unidentified'").fetchone()[0]
        individuals = con.execute("SELECT COUNT(*) FROM individuals").fetchone()[0]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert confirmed + unidentified == train[C.IMAGE].nunique()
    assert unidentified == int((train[C.ID] == C.NEW_WHALE).sum())
    assert individuals == train.loc[train[C.ID] != C.NEW_WHALE, C.ID].nunique()
    assert mode == "wal"
    manifest = json.loads((catalogue / "bundle" / "manifest.json").read_text())
    assert manifest["version"] and manifest["data_fingerprint"] and manifest["models"][0]["folds"]


def test_scripted_workflow(catalogue, trained_tiny, tmp_path, capsys):
    """init (fixture), add, queue, decide match / new, the refusals, merge, split, undo, rematch, the
    three exports and the Kaggle export read back by preprocess."""
    data, work = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    known = solution[solution[C.ID] != C.NEW_WHALE].iloc[0]
    unknown = solution[solution[C.ID] == C.NEW_WHALE].iloc[0]
    cat = ["--catalogue", str(catalogue)]
    code, out, err = run(capsys, "catalogue", "add", *cat, str(data / "test" / known[C.IMAGE]),
                         str(data / "test" / unknown[C.IMAGE]), "--date", "2024-06-01", "--location", "64.1,-21.9",
                         "--photographer", "A. Biologist")
    assert code == 0, err
    assert out.count("queued ") == 2
    code, out, err = run(capsys, "catalogue", "queue", *cat, "--json")
    queue = json.loads(out)
    assert [q["name"] for q in queue] == [known[C.IMAGE], unknown[C.IMAGE]]
    assert all(0 <= q["p_new"] <= 1 and len(q["candidates"]) == 5 for q in queue)
    # The same bytes again: refused, naming what is stored; nothing stored twice.
    code, out, err = run(capsys, "catalogue", "add", *cat, str(data / "test" / known[C.IMAGE]))
    assert code == 2 and f"already in the catalogue as {known[C.IMAGE]}" in out
    # Decide: a match and a new individual.
    code, out, err = run(capsys, "catalogue", "decide", *cat, known[C.IMAGE], "--match", known[C.ID], "--reviewer", "ann")
    assert code == 0, err
    existing = pd.read_csv(data / "train.csv")[C.ID].iloc[0]
    code, out, err = run(capsys, "catalogue", "decide", *cat, unknown[C.IMAGE], "--new", existing, "--reviewer", "bob")
    assert code == 2 and "already an individual or an alias" in err
    code, out, err = run(capsys, "catalogue", "decide", *cat, unknown[C.IMAGE], "--new", "--reviewer", "bob")
    assert code == 0, err
    new_id = out.split(": new ")[1].split(" ")[0]
    # Already decided: refused with who decided it.
    code, out, err = run(capsys, "catalogue", "decide", *cat, known[C.IMAGE], "--unsure", "--reviewer", "bob")
    assert code == 2 and "already decided: match" in err and "by ann" in err
    with db(catalogue) as con:
        rows = {r["original_name"]: dict(r) for r in con.execute("SELECT * FROM photos WHERE source = 'add'")}
        decisions = [dict(r) for r in con.execute("SELECT * FROM decisions WHERE kind IN ('match', 'new')")]
    assert rows[known[C.IMAGE]]["individual_id"] == known[C.ID] and rows[unknown[C.IMAGE]]["individual_id"] == new_id
    assert all(d["bundle_version"] and d["candidates"] and d["p_new"] is not None for d in decisions)
    # Merge the new individual into the known one, then split it out again.
    code, out, err = run(capsys, "catalogue", "merge", *cat, known[C.ID], new_id, "--reviewer", "ann")
    assert code == 0, err
    with db(catalogue) as con:
        assert con.execute("SELECT individual_id FROM photos WHERE original_name = ?",
                           (unknown[C.IMAGE],)).fetchone()[0] == known[C.ID]
        assert con.execute("SELECT individual_id FROM aliases WHERE alias = ?", (new_id,)).fetchone()[0] == known[C.ID]
    code, out, err = run(capsys, "catalogue", "decide", *cat, known[C.IMAGE], "--match", new_id, "--reviewer", "cy")
    assert code == 2  # still decided; and an alias resolves: the next check uses it
    code, out, err = run(capsys, "catalogue", "split", *cat, new_id, unknown[C.IMAGE], "--new-id", "w_split01",
                         "--reviewer", "ann")
    assert code == 0, err
    # Undo: ann's last decision is the split, then the merge; bob's is the new individual.
    for _ in range(2):
        assert run(capsys, "catalogue", "undo", *cat, "--reviewer", "ann")[0] == 0
    with db(catalogue) as con:
        assert con.execute("SELECT individual_id FROM photos WHERE original_name = ?",
                           (unknown[C.IMAGE],)).fetchone()[0] == new_id
        assert not con.execute("SELECT 1 FROM individuals WHERE id = 'w_split01'").fetchone()
        assert not con.execute("SELECT 1 FROM aliases WHERE alias = ?", (new_id,)).fetchone()
    assert run(capsys, "catalogue", "undo", *cat, "--reviewer", "bob")[0] == 0
    with db(catalogue) as con:
        status = con.execute("SELECT status, individual_id FROM photos WHERE original_name = ?",
                             (unknown[C.IMAGE],)).fetchone()
        assert tuple(status) == ("pending", None)
        assert not con.execute("SELECT 1 FROM individuals WHERE id = ?", (new_id,)).fetchone()
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE kind = 'undo'").fetchone()[0] == 3
    code, out, err = run(capsys, "catalogue", "rematch", *cat)
    assert code == 0 and "ranked 1 photo(s)" in out
    # Exports.
    kaggle = tmp_path / "export"
    assert run(capsys, "catalogue", "export", *cat, "--format", "kaggle", "--out", str(kaggle))[0] == 0
    train = pd.read_csv(kaggle / "train.csv")
    assert known[C.ID] in set(train[C.ID]) and len(list((kaggle / "test").iterdir())) == 1  # the pending photo
    assert run(capsys, "catalogue", "export", *cat, "--format", "wildbook", "--out", str(tmp_path / "wb.csv"))[0] == 0
    wildbook = pd.read_csv(tmp_path / "wb.csv")
    for column in ("Encounter.mediaAsset0", "MarkedIndividual.individualID", "Encounter.year", "Encounter.month",
                   "Encounter.day", "Encounter.decimalLatitude", "Encounter.decimalLongitude", "Encounter.genus",
                   "Encounter.specificEpithet"):
        assert column in wildbook.columns, column
    mine = wildbook[wildbook["Encounter.decimalLatitude"].notna()]
    assert len(mine) == 1 and mine["Encounter.year"].iloc[0] == 2024 and mine["Encounter.genus"].iloc[0] == "Megaptera"
    assert run(capsys, "catalogue", "export", *cat, "--format", "dwc", "--out", str(tmp_path / "dwc.csv"))[0] == 0
    dwc = pd.read_csv(tmp_path / "dwc.csv")
    for column in ("occurrenceID", "organismID", "eventDate", "decimalLatitude", "decimalLongitude", "scientificName",
                   "associatedMedia", "identifiedBy", "dateIdentified"):
        assert column in dwc.columns, column
    row = dwc[dwc["identifiedBy"] == "ann"]
    assert len(row) == 1 and row["organismID"].iloc[0] == known[C.ID] and row["eventDate"].iloc[0] == "2024-06-01"
    assert (dwc["scientificName"] == "Megaptera novaeangliae").all()
    # The Kaggle export is a valid layout: preprocess reads it back.
    assert main(["preprocess", "--data", str(kaggle), "--work", str(tmp_path / "rework"),
                 "--set", "preprocess.image_size=[32,64]"]) == 0
    manifest = pd.read_parquet(tmp_path / "rework" / "cache" / "manifest.parquet")
    assert (manifest[C.SPLIT] == C.TRAIN).sum() == len(train)
    assert run(capsys, "catalogue", "check", *cat)[0] == 0


def test_a_confirmed_photo_is_matched_by_the_next_query_at_once(catalogue, trained_tiny, tmp_path, capsys):
    """An unknown animal's photo, declared a new individual, is the top candidate for a near-identical
    photo added a moment later: no retraining, no rebuild."""
    from pipeline.catalogue.catalogue import Catalogue

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    photo = data / "test" / solution.loc[solution[C.ID] == C.NEW_WHALE, C.IMAGE].iloc[0]
    cat = Catalogue.open(catalogue)
    other = Catalogue.open(catalogue)  # another reviewer's session, its galleries loaded before the decision
    size = other.matcher.gallery_size()
    first = cat.add([photo])[0]
    decided = cat.decide(first.hash, "new", "ann")
    assert cat.matcher.gallery_size() == size + 1  # appended to the loaded galleries
    again = cat.add([near_copy(photo, tmp_path / "again.jpg")])[0]
    assert again.ranking.candidates[0]["id"] == decided["individual"]
    assert first.hash in again.ranking.candidates[0]["photos"]
    # The other session picks the decision up before its next ranking.
    third = other.add([near_copy(photo, tmp_path / "third.jpg", brighter=0.94)])[0]
    assert third.refused is None and third.ranking.candidates[0]["id"] == decided["individual"]
    assert other.matcher.gallery_size() == size + 1


def test_two_concurrent_decisions_on_one_photo_leave_exactly_one(catalogue, trained_tiny):
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.errors import PipelineError

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    added = Catalogue.open(catalogue).add([data / "test" / solution[C.IMAGE].iloc[1]])[0]

    def decide(reviewer):
        try:
            return Catalogue.open(catalogue).decide(added.hash, "new", reviewer)
        except PipelineError as e:
            return str(e)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(decide, ["ann", "bob"]))
    assert sum(isinstance(r, dict) for r in results) == 1
    refusal = next(r for r in results if isinstance(r, str))
    assert "already decided" in refusal
    with db(catalogue) as con:
        assert con.execute("SELECT COUNT(*) FROM decisions WHERE photo = ?", (added.hash,)).fetchone()[0] == 1


@pytest.mark.parametrize("point", ["file_written", "file_renamed", "rows_written", "committed"])
def test_kill_9_during_add_leaves_the_catalogue_consistent(catalogue, trained_tiny, point):
    """The add process is killed (SIGKILL, no cleanup) at each critical point: afterwards the database
    passes integrity_check, every listed photo has its file, its embeddings and its ranking, and no
    file is left that the database does not list."""
    from pipeline.catalogue.store import Store

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    photos = [str(data / "test" / n) for n in solution[C.IMAGE].iloc[2:4]]
    env = {**os.environ, "WHALE_CATALOGUE_CRASH_AT": point, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline", "catalogue", "add", "--catalogue", str(catalogue), *photos],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    store = Store.open(catalogue)  # the next start: orphans of the dead add are removed
    report = store.check()
    assert report == {"integrity": "ok", "files_not_listed": [], "rows_without_file": []}, report
    added = store.db.execute("SELECT hash FROM photos WHERE source = 'add'").fetchall()
    assert len(added) == (1 if point == "committed" else 0)
    folds = store.db.execute("SELECT COUNT(DISTINCT model || fold) FROM embeddings").fetchone()[0]
    for (digest,) in added:
        assert store.db.execute("SELECT COUNT(*) FROM embeddings WHERE hash = ?", (digest,)).fetchone()[0] == folds
        assert store.db.execute("SELECT 1 FROM rankings WHERE hash = ?", (digest,)).fetchone()
    store.close()


def test_kill_9_during_a_decision_changes_nothing(catalogue, trained_tiny):
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.catalogue.store import Store

    data, _ = trained_tiny
    solution = pd.read_csv(data / "solution.csv")
    added = Catalogue.open(catalogue).add([data / "test" / solution[C.IMAGE].iloc[4]])[0]
    env = {**os.environ, "WHALE_CATALOGUE_CRASH_AT": "decision_half_written", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pipeline", "catalogue", "decide", "--catalogue", str(catalogue),
                           added.hash, "--new", "--reviewer", "ann"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    store = Store.open(catalogue)
    assert store.check()["integrity"] == "ok"
    assert tuple(store.db.execute("SELECT status, individual_id FROM photos WHERE hash = ?",
                                  (added.hash,)).fetchone()) == ("pending", None)
    assert not store.db.execute("SELECT 1 FROM decisions WHERE photo = ?", (added.hash,)).fetchone()


def test_bundle_identifies_like_the_work_folder_and_builds_no_index_per_request(trained_tiny, tmp_path, capsys,
                                                                               monkeypatch):
    from pipeline.retrieval import index
    from pipeline.identify import Identifier

    data, work = trained_tiny
    out = tmp_path / "bundle"
    assert main(["bundle", "--work", str(work), "--out", str(out)]) == 0
    photos = [str(data / "test" / n) for n in pd.read_csv(data / "solution.csv")[C.IMAGE].iloc[:3]]
    capsys.readouterr()
    assert main(["identify", *photos, "--work", str(work), "--json"]) == 0
    from_work = json.loads(capsys.readouterr().out)["results"]
    assert main(["identify", *photos, "--bundle", str(out), "--json"]) == 0
    from_bundle = json.loads(capsys.readouterr().out)["results"]
    assert [[(c["id"], c["score"]) for c in r["top5"]] for r in from_work] == \
           [[(c["id"], c["score"]) for c in r["top5"]] for r in from_bundle]
    identifier = Identifier.from_bundle(out)
    built = []
    real = index.build_index
    monkeypatch.setattr(index, "build_index", lambda *a, **k: built.append(1) or real(*a, **k))
    identifier.identify([identifier.load_photo(p) for p in photos], photos)
    assert built == []  # every gallery's index was built when the bundle was loaded


def test_p_new_is_calibrated_on_held_out_queries():
    """Fitted on half of the queries, judged on the other half: in each decile of P the share of new
    individuals matches the mean P (within sampling error)."""
    from pipeline.decision.calibration import NewIndividualCalibration, auc, reliability

    rng = np.random.default_rng(0)
    n = 8000
    score = rng.uniform(0, 1, n)
    truly_new = rng.random(n) < 1 / (1 + np.exp(12 * (score - 0.55)))  # new individuals score low
    fit, held = np.arange(n) < n // 2, np.arange(n) >= n // 2
    calibration = NewIndividualCalibration.fit(score[fit], truly_new[fit])
    p = calibration(score[held])
    table = reliability(p, truly_new[held])
    assert len(table) == 10
    assert (table["mean_p_new"] - table["share_new"]).abs().max() < 0.06, table
    assert np.all(np.diff(calibration(np.linspace(0, 1, 50))) <= 1e-12)  # a higher score is never more new
    assert auc(p, truly_new[held]) > 0.85


def test_p_new_of_the_bundle_cross_fitted_on_its_folds(trained_tiny):
    """The tiny run's out-of-fold queries: P(new) fitted on the other folds, applied to each fold's
    queries, has a mean near their share of new individuals and ranks new above known."""
    from pipeline.data.folds import read_folds
    from pipeline.decision.calibration import NewIndividualCalibration, auc
    from pipeline.retrieval.predictions import Predictions
    from pipeline.decision.threshold import top_whales

    _, work = trained_tiny
    oof = Predictions.read(work / "predictions" / "demo_triplet").oof
    folds = read_folds(work / "folds.csv")
    p, new = [], []
    for fold in sorted(oof[C.FOLD].unique()):
        rest = oof[oof[C.FOLD] != fold]
        calibration = NewIndividualCalibration.from_predictions(rest, folds[folds[C.IMAGE].isin(rest[C.IMAGE])])
        queries = folds[folds[C.FOLD] == fold]
        _, vals = top_whales(oof[oof[C.FOLD] == fold], queries[C.IMAGE])
        p.extend(calibration(vals[:, 0]))
        new.extend(queries[C.TRUTH] == C.NEW_WHALE)
    p, new = np.array(p), np.array(new)
    assert abs(p.mean() - new.mean()) < 0.15, (p.mean(), new.mean())
    assert auc(p, new) > 0.6


def test_evaluate_replays_the_catalogue(catalogue, capsys):
    code, out, err = run(capsys, "catalogue", "evaluate", "--catalogue", str(catalogue), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["returning"] > 0 and report["first_sightings"] > 0
    assert 0 <= report["rank1"] <= report["rank5"] <= report["rank10"] <= report["found_in_kept"] <= 1
    assert report["rank5"] > 0.3  # far above chance among 25 individuals
    assert 0 <= report["p_new_auc"] <= 1 and sum(r["photos"] for r in report["reliability"]) == report["queries"]


def test_rebind_embeds_every_photo_anew_and_ranks_the_queue_again(catalogue, trained_tiny):
    """`init --rebind --work W`: every photo is embedded by W's fold networks from its stored file (here
    the same models: the vectors agree with those imported from the work folder), the bundle is
    swapped, and pending photos are ranked by the new bundle."""
    from pipeline.catalogue.catalogue import Catalogue

    data, work = trained_tiny
    cat = Catalogue.open(catalogue)
    pending = cat.add([data / "test" / pd.read_csv(data / "solution.csv")[C.IMAGE].iloc[5]])[0]
    imported = cat.store.db.execute("SELECT hash FROM photos WHERE source = 'import' AND status = 'confirmed' "
                                    "LIMIT 3").fetchall()
    hashes = [r[0] for r in imported]
    model = cat.matcher.bundle.models[0]
    fold = sorted(model.checkpoints)[0]
    before = cat.store.embeddings(model.name, fold, hashes, status=None)[2]
    version = cat.rebind(work)
    after = cat.store.embeddings(model.name, fold, hashes, status=None)[2]
    assert np.all(np.sum(before * after, axis=1) > 0.99)
    assert json.loads((catalogue / "bundle" / "manifest.json").read_text())["version"] == version
    ranked = cat.store.db.execute("SELECT bundle_version FROM rankings WHERE hash = ?", (pending.hash,)).fetchone()[0]
    assert ranked == version
    assert cat.store.db.execute("SELECT COUNT(*) FROM decisions WHERE kind = 'rebind'").fetchone()[0] == 1
    assert not (catalogue / "bundle.new").exists() and not (catalogue / "bundle.old").exists()


def test_add_refuses_what_preprocess_refuses_and_stores_nothing(catalogue, tmp_path, capsys):
    from tests.conftest import bomb_png

    bad = tmp_path / "broken.jpg"
    bad.write_text("not a photo")
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(bomb_png())
    before = sorted(p.name for p in (catalogue / "photos").rglob("*") if p.is_file())
    for path, reason in ((bad, "cannot decode image"), (bomb, "refused")):
        code, out, err = run(capsys, "catalogue", "add", "--catalogue", str(catalogue), str(path))
        assert code == 2 and path.name in err and reason in err, err
        assert f"refused {path}: " in out and reason in out
    # A file that is not a photo type is skipped, named with its reason: not a refusal (exit status 0).
    (tmp_path / "notes.txt").write_text("x")
    code, out, err = run(capsys, "catalogue", "add", "--catalogue", str(catalogue), str(tmp_path / "notes.txt"))
    assert code == 0 and f"skipped {tmp_path / 'notes.txt'}: .txt is not a photo type" in out, out + err
    assert sorted(p.name for p in (catalogue / "photos").rglob("*") if p.is_file()) == before
    with db(catalogue) as con:
        assert not con.execute("SELECT 1 FROM photos WHERE source = 'add'").fetchone()
