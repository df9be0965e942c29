"""One retrieval path and one new_whale decision shared by every stage: each test here pins a seam that
once gave a wrong answer (identify vs knn, thresholds on two scales, config layers, leaks)."""
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.cli import main
from pipeline.data.folds import make_folds, read_folds
from tests.conftest import REPO, TINY_SETS, write_layout

SETS = [x for s in TINY_SETS for x in ("--set", s)]


@pytest.mark.parametrize("local", [False, True], ids=["global", "local-features"])
def test_identify_reproduces_knn_test_scores_with_a_photo_for_every_scored_candidate(trained_tiny, tmp_path, capsys,
                                                                                      local):
    """A test photo given to `whale identify` gets the scores, labels and threshold of the submission,
    with the knn settings the predictions were made with (here few neighbours: short candidate lists;
    and with local-feature re-scoring, whose query descriptors identify computes from the photo)."""
    data, trained = trained_tiny
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    common = ["--work", str(work), "--folds-file", str(work / "folds.csv"), *SETS,
              "--set", "knn.neighbours=6", "--set", "knn.keep_top=6", "--set", f"knn.local={str(local).lower()}"]
    for stage in (["knn", "--model", "demo_triplet"], ["ensemble", "--model", "demo_triplet"],
                  ["submit", "--out", str(work / "sub.csv")]):
        assert main([stage[0], *common, *stage[1:]]) == 0
    test = pd.read_parquet(work / "predictions" / "demo_triplet" / "test.parquet")
    submission = pd.read_csv(work / "sub.csv").set_index(C.IMAGE)[C.ID]
    names = sorted(test[C.IMAGE].unique())
    capsys.readouterr()
    assert main(["identify", *(str(data / "test" / n) for n in names), "--work", str(work), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    for name, result in zip(names, answer["results"]):
        expected = test[test[C.IMAGE] == name].set_index(C.ID)[C.SCORE]
        scored = [c for c in result["top5"] if c["score"] is not None]
        for c in scored:
            assert c["score"] == pytest.approx(float(expected[c["id"]]), abs=1e-3), (name, c)
            assert c["photos"], f"{c['id']} has a score for {name} but no photo"
        assert [c["id"] for c in result["top5"]] == submission[name].split(), name


def test_test_scores_share_the_out_of_fold_scale(tmp_path):
    """Fold model k scores a test photo against the gallery its validation photos were scored against:
    a test photo identical to a validation photo gets exactly that photo's out-of-fold scores."""
    rows = [(f"{i}.jpg", f"w_{i % 5}") for i in range(30)]
    data = write_layout(tmp_path / "data", rows, ["copy.jpg"], distinct=True)
    work, folds_file = tmp_path / "w", tmp_path / "folds.csv"
    assert main(["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.image_size=[8,8]"]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(folds_file), "--set", "folds.n_folds=2",
                 "--set", "folds.holdout_whale_share=0"]) == 0
    folds = read_folds(folds_file)
    rng = np.random.default_rng(0)
    names = [r[0] for r in rows]
    copied = folds[(folds[C.FOLD] == 0) & (folds[C.TRUTH] != C.NEW_WHALE)][C.IMAGE].iloc[0]
    for fold in (0, 1):
        out = work / "embeddings" / "hand" / f"fold{fold}"
        out.mkdir(parents=True)
        train = rng.normal(size=(len(names), 6)).astype(np.float32)
        train /= np.linalg.norm(train, axis=1, keepdims=True)
        np.save(out / "train.npy", train)
        np.save(out / "test.npy", train[[names.index(copied)]])
        pd.DataFrame({"Image": names + ["copy.jpg"], "split": ["train"] * len(names) + ["test"],
                      "row": list(range(len(names))) + [0]}).to_csv(out / "index.csv", index=False)
    (tmp_path / "configs" / "models").mkdir(parents=True)
    (tmp_path / "configs" / "models" / "hand.yaml").write_text("model:\n  backbone: test_resnet\n")
    assert main(["knn", "--work", str(work), "--configs", str(tmp_path / "configs"), "--model", "hand",
                 "--folds-file", str(folds_file), "--folds", "0"]) == 0
    preds = work / "predictions" / "hand"
    oof = pd.read_parquet(preds / "oof.parquet")
    test = pd.read_parquet(preds / "test.parquet")
    mine = oof[oof[C.IMAGE] == copied].set_index(C.ID)[C.SCORE].sort_index()
    theirs = test[test[C.IMAGE] == "copy.jpg"].set_index(C.ID)[C.SCORE].sort_index()
    pd.testing.assert_series_equal(mine, theirs, check_names=False)


def test_fold_fusion_lets_a_model_without_the_whale_abstain():
    from pipeline.retrieval.scores import fuse

    a = pd.DataFrame({C.IMAGE: ["q", "q"], C.ID: ["w1", "w2"], C.SCORE: [0.9, 0.5]})
    b = pd.DataFrame({C.IMAGE: ["q", "q"], C.ID: ["w2", "w3"], C.SCORE: [0.8, 0.4]})
    fused = fuse([a, b], known=[{"w1", "w2", "w3"}, {"w2", "w3"}]).set_index(C.ID)[C.SCORE]
    assert fused["w1"] == pytest.approx(0.9)  # b's gallery lacks w1: it abstains
    assert fused["w3"] == pytest.approx((0.5 + 0.4) / 2)  # a knows w3 but did not keep it: a's floor


def test_threshold_settings_in_ensemble_yaml_reach_cv_and_report(trained_tiny, tmp_path):
    data, trained = trained_tiny
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    (configs / "ensemble.yaml").write_text("threshold: {strategy: share, new_whale_share: 0.5}\n")
    common = ["--work", str(work), "--configs", str(configs), "--folds-file", str(work / "folds.csv"), *SETS]
    assert main(["knn", *common, "--model", "demo_triplet"]) == 0
    assert main(["ensemble", *common, "--model", "demo_triplet"]) == 0
    assert main(["cv", *common]) == 0
    report = json.loads((work / "reports" / "cv.json").read_text())
    assert report["strategy"] == "share"
    saved = (work / "reports" / "cv.config.yaml").read_text()
    assert "strategy: share" in saved
    assert json.loads((work / "predictions" / "ensemble" / "threshold.json").read_text())["strategy"] == "share"
    assert main(["report", *common]) == 0
    assert "new_whale policy <code>share</code>" in (work / "reports" / "report.html").read_text()


def test_a_knn_override_does_not_retrain(trained_tiny, tmp_path, caplog):
    data, trained = trained_tiny
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    final = work / "models" / "demo_triplet" / "fold0" / "final.pt"
    before = final.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert main(["train", "--work", str(work), "--model", "demo_triplet", "--folds-file", str(work / "folds.csv"),
                     *SETS, "--set", "knn.neighbours=10", "--set", "threshold.grid=11"]) == 0
    assert final.stat().st_mtime_ns == before
    assert "up to date with this config; skipping" in caplog.text


def test_two_data_sets_get_their_own_folds_files(tmp_path, monkeypatch):
    from pipeline.io.paths import default_folds_file

    monkeypatch.chdir(tmp_path)  # the default folds/ is relative: written under tmp_path, never the checkout

    works = []
    for name in ("first", "second"):
        data = write_layout(tmp_path / name / "data", [(f"{i}.jpg", f"w_{i % 3}") for i in range(9)], ["t.jpg"])
        work = tmp_path / name / "work"
        assert main(["preprocess", "--data", str(data), "--work", str(work), "--set", "preprocess.image_size=[8,8]"]) == 0
        works.append(work)
    first, second = (default_folds_file(w, tmp_path / "folds") for w in works)
    assert first != second and first.name.startswith("data-")
    for work in works:  # the CLI default follows the work folder's data set
        assert main(["folds", "--work", str(work), "--set", "folds.n_folds=2"]) == 0
    assert len({str(default_folds_file(w)) for w in works}) == 2 and all(default_folds_file(w).is_file() for w in works)
    assert all((tmp_path / default_folds_file(w)).is_file() for w in works)


def test_cv_names_its_baselines_by_what_they_do(trained_tiny):
    from pipeline.decision.evaluation import cross_validate
    from pipeline.metrics import map_at_5
    from pipeline.decision.policy import NewWhalePolicy
    from pipeline.decision.threshold import top_whales

    _, work = trained_tiny
    folds = read_folds(work / "folds.csv")
    oof = pd.read_parquet(work / "predictions" / "demo_triplet" / "oof.parquet")
    report = cross_validate(oof, folds, NewWhalePolicy())
    queries = folds[folds[C.FOLD].isin(oof[C.FOLD].unique())].reset_index(drop=True)
    ids, _ = top_whales(oof, queries[C.IMAGE])
    never = [[w for w in row if w][:5] for row in ids]
    always = [[C.NEW_WHALE] + [w for w in row if w][:4] for row in ids]
    assert report["map5_never_new_whale_first"] == pytest.approx(map_at_5(queries[C.TRUTH], never), abs=1e-4)
    assert report["map5_always_new_whale_first"] == pytest.approx(map_at_5(queries[C.TRUTH], always), abs=1e-4)


def test_knn_log_calls_its_figure_in_sample(trained_tiny, tmp_path, caplog):
    data, trained = trained_tiny
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    with caplog.at_level(logging.INFO):
        assert main(["knn", "--work", str(work), "--model", "demo_triplet", "--folds-file", str(work / "folds.csv"),
                     *SETS, "--force"]) == 0
    line = next(r.getMessage() for r in caplog.records if "new_whale threshold" in r.getMessage())
    assert "in-sample" in line and "out-of-fold MAP@5" not in line


def test_pseudo_labels_of_fold_k_come_from_fold_ks_own_classifier(trained_tiny, monkeypatch):
    from pipeline.ensemble import methods

    data, work = trained_tiny
    folds = read_folds(work / "folds.csv")
    calls = []
    original = methods.classifier_fold

    def spy(work_, models, folds_, fold, test_names, cfg, extra=None, matcher=None):
        result = original(work_, models, folds_, fold, test_names, cfg, extra, matcher)
        calls.append((fold, extra, result[1]))
        return result

    monkeypatch.setattr(methods, "classifier_fold", spy)
    from pipeline.config import load_stage_config

    cfg = load_stage_config(REPO / "configs", "demo_triplet", [*TINY_SETS, "ensemble.pseudo_labels.enabled=true",
                                                                 "ensemble.pseudo_labels.min_score=0.0"])
    test_names = pd.read_parquet(work / "predictions" / "demo_triplet" / "test.parquet")[C.IMAGE].unique()
    _, _, chosen = methods.classifier(work, [{"name": "demo_triplet", "weight": 1.0}], folds, [0, 1, 2], test_names, cfg)
    first_round = {fold: test for fold, extra, test in calls if extra is None}
    for fold, extra, _ in calls:
        if extra is not None:  # the second round of fold k learns what fold k's first round chose
            expected = methods.pseudo_labels(first_round[fold], 0.0)
            pd.testing.assert_frame_equal(extra.reset_index(drop=True), expected)
    assert sorted(chosen) == [0, 1, 2]


def test_duplicate_photos_of_a_whale_share_a_fold():
    rows = []
    for w in range(12):
        rows += [(f"{w}_{j}.jpg", f"w_{w}") for j in range(4)]
    train = pd.DataFrame(rows, columns=[C.IMAGE, C.ID])
    # Photos 0 and 1 of every whale are near-copies; whale 0's four photos are all copies of one shot.
    pairs = [(f"{w}_0.jpg", f"{w}_1.jpg") for w in range(12)] + [("0_1.jpg", "0_2.jpg"), ("0_2.jpg", "0_3.jpg")]
    duplicates = pd.DataFrame([{"image_a": a, "split_a": "train", "id_a": "", "image_b": b, "split_b": "train",
                                "id_b": "", "distance": 1} for a, b in pairs])
    folds = make_folds(train, 4, 0.0, holdout_whale_share=0.0, seed=0, duplicates=duplicates).set_index(C.IMAGE)
    for a, b in pairs:
        assert folds.loc[a, C.FOLD] == folds.loc[b, C.FOLD], (a, b)
    assert (folds.loc[[f"0_{j}.jpg" for j in range(4)], C.TRUTH] == C.NEW_WHALE).all()  # one shot: a singleton


def test_stages_are_glue_and_library_code_lives_in_the_library():
    """No library module imports a stage; a stage imports no other stage (only their shared arguments)."""
    imports = re.compile(r"^\s*from pipeline\.stages(\.(\w+))? import|^\s*import pipeline\.stages", re.MULTILINE)
    for path in (REPO / "pipeline").rglob("*.py"):
        rel = path.relative_to(REPO / "pipeline")
        found = [m.group(2) for m in imports.finditer(path.read_text())]
        if rel.parts[0] == "stages":
            assert set(found) <= {"common"}, (str(rel), found)
        elif rel.name not in ("cli.py", "__main__.py"):
            assert not found, (str(rel), found)


def test_one_place_decides_new_whale_and_one_place_searches():
    """Thresholds are tuned and applied only by NewWhalePolicy; faiss is searched only by the retriever
    (and its post-processors)."""
    threshold_math = re.compile(r"\b(tune_threshold|share_threshold|predict)\b")
    searches = re.compile(r"from pipeline\.retrieval\.index import[^\n]*\b(search|build_index)\b")
    for path in (REPO / "pipeline").rglob("*.py"):
        rel = str(path.relative_to(REPO))
        text = path.read_text()
        if rel not in ("pipeline/decision/policy.py", "pipeline/decision/threshold.py"):
            assert not re.search(r"from pipeline\.decision\.threshold import[^\n]*" + threshold_math.pattern, text), rel
        if rel not in ("pipeline/retrieval/retriever.py", "pipeline/retrieval/rerank.py",
                       "pipeline/retrieval/verification.py"):  # the retriever and its post-processors
            assert not searches.search(text), rel


def test_a_query_photo_is_framed_as_the_cache_was(trained_tiny, tmp_path):
    """The bundle carries preprocess's framing (trim_padding, keep_aspect), saved and loaded, so a photo
    given to identify or the catalogue is decoded exactly as the cache decoded its training photos."""
    from pipeline.bundle import Bundle
    from pipeline.data.cache import ImageCache
    from pipeline.identify import Identifier

    data, work = trained_tiny
    facts = json.loads((work / "cache" / "preprocess.json").read_text())
    bundle = Bundle.from_work(work, ["demo_triplet"])
    assert bundle.framing == {"trim_padding": facts["trim_padding"], "keep_aspect": facts["keep_aspect"]}
    bundle.save(tmp_path / "bundle")
    loaded = Bundle.load(tmp_path / "bundle")
    assert loaded.framing == bundle.framing
    cache = ImageCache.open(work)
    name = cache.manifest[C.IMAGE].iloc[0]
    row = int(cache.rows([name])[0])
    assert np.array_equal(Identifier(bundle=loaded).load_photo(data / "train" / name), cache.images[row])
