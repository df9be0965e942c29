"""The ensemble stage: softmax over concatenated features without leaks, fusion, blend, thresholds,
pseudo-labels and the comparison table."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline import columns as C
from pipeline.cli import main
from pipeline.ensemble.features import centred, mirrored
from pipeline.decision.threshold import share_threshold
from pipeline.data.folds import read_folds
from tests.conftest import REPO, TINY_SETS


@pytest.fixture(scope="module")
def two_models(trained_tiny, tmp_path_factory):
    """The tiny trained WORK plus a second model (test_arcface), and a configs folder listing both."""
    data, trained = trained_tiny
    work = tmp_path_factory.mktemp("ens") / "work"
    shutil.copytree(trained, work)
    configs = work.parent / "configs"
    shutil.copytree(REPO / "configs", configs)
    sets = [x for s in TINY_SETS for x in ("--set", s)]
    folds_file = str(work / "folds.csv")
    for stage in ("train", "embed", "knn"):
        assert main([stage, "--work", str(work), "--configs", str(configs), "--model", "test_arcface",
                     "--folds-file", folds_file, *sets]) == 0
    return work, configs, folds_file, sets


def write_ensemble(configs, **extra):
    text = ("ensemble:\n  models:\n    - {name: demo_triplet, weight: 1.0}\n    - {name: test_arcface, weight: 0.5}\n"
            "  methods: [fusion, classifier, blend]\n")
    for key, value in extra.items():
        text += f"  {key}: {value}\n"
    (configs / "ensemble.yaml").write_text(text)


def test_ensemble_methods_table_and_submission(two_models, capsys, monkeypatch):
    import pipeline.ensemble.features as features

    work, configs, folds_file, sets = two_models
    write_ensemble(configs, pseudo_labels="{enabled: true, min_score: 0.2}")
    seen = []  # (names, split) of every feature lookup, to prove fold k's classifier never sees fold k
    original = features.concatenated

    def spy(folders, weights, names, split):
        seen.append((str(folders[0]), list(names), split))
        return original(folders, weights, names, split)

    monkeypatch.setattr(features, "concatenated", spy)
    assert main(["ensemble", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file, *sets]) == 0
    table = capsys.readouterr().out
    for name in ("demo_triplet", "test_arcface", "ensemble: fusion", "ensemble: classifier", "ensemble: blend"):
        assert name in table
    folds = read_folds(folds_file)
    for folder, names, split in seen:
        fold = int(folder.rsplit("fold", 1)[1])
        validation = set(folds.loc[folds[C.FOLD] == fold, C.IMAGE])
        if split == C.TRAIN and not set(names) <= validation:  # a training lookup
            assert not set(names) & validation, f"fold {fold}'s classifier saw its own validation photos"
    report = json.loads((work / "reports" / "ensemble.json").read_text())
    options = {**report["scores"], **{f"member: {k}": v for k, v in report["member_scores"].items()}}
    assert set(report["member_scores"]) == {"demo_triplet", "test_arcface"}
    assert report["chosen"] in options and options[report["chosen"]] == max(options.values())
    assert sum(report["pseudo_labels"]["added_per_fold"].values()) > 0
    labels = pd.read_csv(report["pseudo_labels"]["labels"])
    assert len(labels) and set(labels[C.IMAGE]) <= set(pd.read_parquet(work / "cache" / "manifest.parquet")
                                                       .query("split == 'test'")[C.IMAGE])
    assert "precision" not in json.dumps(report)  # test truth is a benchmark's business, not the stage's
    classifier_oof = pd.read_parquet(work / "predictions" / "ensemble_classifier" / "oof.parquet")
    # Out of fold: each fold's rows are exactly that fold's validation photos.
    for fold, part in classifier_oof.groupby(C.FOLD):
        assert set(part[C.IMAGE]) == set(folds.loc[folds[C.FOLD] == fold, C.IMAGE])
    # Probabilities blended with local-match scores (knn.local is on): each within [0, 1].
    assert classifier_oof[C.SCORE].between(0, 1).all()
    out = work / "sub.csv"
    assert main(["submit", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file,
                 "--out", str(out), *sets]) == 0
    manifest = pd.read_parquet(work / "cache" / "manifest.parquet")
    assert len(pd.read_csv(out)) == int((manifest[C.SPLIT] == C.TEST).sum())


def test_best_output_may_be_a_member_that_beats_every_method(two_models, capsys, monkeypatch):
    """ensemble.output best chooses among the methods and the members alike; when a member scores
    highest by CV its own predictions pass through to submit, and the table says so. The scores are
    made to favour test_arcface (real CV ranks depend on training, which is not bit-identical)."""
    import pipeline.stages.ensemble as stage

    work, configs, folds_file, sets = two_models
    write_ensemble(configs, methods="[fusion]")
    member = pd.read_parquet(work / "predictions" / "test_arcface" / "oof.parquet")
    real = stage.cross_validate

    def favour_test_arcface(oof, folds, policy):
        report = real(oof, folds, policy)
        same = len(oof) == len(member) and set(oof[C.IMAGE]) == set(member[C.IMAGE]) and \
            np.allclose(np.sort(oof[C.SCORE].to_numpy()), np.sort(member[C.SCORE].to_numpy()))
        return {**report, "map5": report["map5"] + (1.0 if same else 0.0)}

    monkeypatch.setattr(stage, "cross_validate", favour_test_arcface)
    assert main(["ensemble", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file, *sets]) == 0
    out = capsys.readouterr().out
    report = json.loads((work / "reports" / "ensemble.json").read_text())
    assert report["chosen"] == "member: test_arcface"
    assert "submit uses: member: test_arcface" in out
    assert "Submit uses **member: test_arcface**" in (work / "reports" / "ensemble.md").read_text()
    chosen = pd.read_parquet(work / "predictions" / "ensemble" / "oof.parquet")
    key = [C.IMAGE, C.ID]
    pd.testing.assert_frame_equal(chosen.sort_values(key)[key + [C.SCORE]].reset_index(drop=True),
                                  member.sort_values(key)[key + [C.SCORE]].reset_index(drop=True))


def test_share_threshold_puts_new_whale_first_for_that_share(two_models):
    vals = np.array([[0.9, 0.1], [0.5, 0.2], [0.7, 0.3], [0.2, 0.1]])
    t = share_threshold(vals, 0.5)
    assert (vals[:, 0] < t).mean() == 0.5
    work, configs, folds_file, sets = two_models
    write_ensemble(configs, methods="[fusion]")
    assert main(["ensemble", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file, *sets,
                 "--set", "threshold.strategy=share", "--set", "threshold.new_whale_share=0.4"]) == 0
    threshold = json.loads((work / "predictions" / "ensemble" / "threshold.json").read_text())
    test = pd.read_parquet(work / "predictions" / "ensemble" / "test.parquet")
    top = test.groupby(C.IMAGE)[C.SCORE].max()
    assert threshold["strategy"] == "share" and abs((top < threshold["threshold"]).mean() - 0.4) < 0.05


def test_mirrored_features_swap_each_models_halves():
    x = np.arange(12, dtype=np.float32).reshape(1, 12)  # two models: 8 and 4 dims
    assert mirrored(x, [8, 4]).tolist() == [[4, 5, 6, 7, 0, 1, 2, 3, 10, 11, 8, 9]]


def test_centred_blocks_lose_the_training_mean_and_keep_their_weight():
    """Each model's block: the training mean subtracted, then norm sqrt(weight), recomputed by hand."""
    rng = np.random.default_rng(0)
    train = np.abs(rng.normal(size=(20, 6))).astype(np.float32) + 1.0  # all positive: cosines near 1
    mean = train.mean(axis=0)
    query = np.abs(rng.normal(size=(3, 6))).astype(np.float32) + 1.0
    got = centred(query, mean, [4, 2], [1.0, 0.25])
    for start, d, w in ((0, 4, 1.0), (4, 2, 0.25)):
        block = query[:, start:start + d] - mean[start:start + d]
        expected = np.sqrt(w) * block / np.linalg.norm(block, axis=1, keepdims=True)
        assert np.allclose(got[:, start:start + d], expected, atol=1e-6)
        assert np.allclose(np.linalg.norm(got[:, start:start + d], axis=1), np.sqrt(w), atol=1e-6)
    cos = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    assert cos(centred(train, mean, [4, 2], [1.0, 1.0])).mean() < cos(train).mean() - 0.5


def test_the_centred_classifier_is_out_of_fold_and_ranks(two_models):
    """ensemble.classifier.centre: fold k's classifier is centred on its own training photos and still
    gives each validation photo a ranked list of known whales."""
    import copy

    from pipeline.config import load_stage_config
    from pipeline.data.cache import ImageCache
    from pipeline.ensemble import methods as M

    work, configs, folds_file, sets = two_models
    cfg = load_stage_config(configs, overrides=TINY_SETS)
    cfg["ensemble"]["classifier"].update(centre=True, local=False)
    folds = read_folds(folds_file)
    test_names = ImageCache.open(work).split(C.TEST)[C.IMAGE].to_numpy()
    oof, test, _ = M.classifier(work, [{"name": "demo_triplet", "weight": 1.0}, {"name": "test_arcface", "weight": 0.5}],
                                folds, [0], test_names, cfg)
    val = folds[folds[C.FOLD] == 0]
    assert set(oof[C.IMAGE]) == set(val[C.IMAGE])
    trained_on = set(folds[(folds[C.FOLD] != 0) & (folds[C.ID] != C.NEW_WHALE)][C.ID])
    assert set(oof[C.ID]) <= trained_on
    assert (oof.groupby(C.IMAGE)[C.SCORE].sum() <= 1 + 1e-5).all()
    assert set(test[C.IMAGE]) == set(test_names)


def test_list_models_and_unknown_method(two_models, capsys):
    work, configs, folds_file, sets = two_models
    write_ensemble(configs)
    assert main(["ensemble", "--configs", str(configs), "--list-models"]) == 0
    assert capsys.readouterr().out.split() == ["demo_triplet", "test_arcface"]
    write_ensemble(configs, methods="[fusion, stacking]")
    assert main(["ensemble", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file]) == 2
    assert "unknown ensemble method 'stacking'; use one of blend, classifier, fusion" in capsys.readouterr().err


def test_identify_with_several_models_scores_as_the_ensemble_fusion(two_models, trained_tiny, capsys):
    """Several models: identify fuses them with the ensemble's weights and uses the fusion's own policy."""
    data, _ = trained_tiny
    work, configs, folds_file, sets = two_models
    write_ensemble(configs)
    assert main(["ensemble", "--work", str(work), "--configs", str(configs), "--folds-file", folds_file, *sets]) == 0
    fused = pd.read_parquet(work / "predictions" / "ensemble_fusion" / "test.parquet")
    policy = json.loads((work / "predictions" / "ensemble_fusion" / "threshold.json").read_text())
    name = sorted(fused[C.IMAGE].unique())[0]
    capsys.readouterr()
    assert main(["identify", str(data / "test" / name), "--work", str(work), "--models", "demo_triplet",
                 "test_arcface", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["threshold"] == pytest.approx(policy["threshold"])
    expected = fused[fused[C.IMAGE] == name].set_index(C.ID)[C.SCORE]
    for c in answer["results"][0]["top5"]:
        if c["score"] is not None:
            assert c["score"] == pytest.approx(float(expected[c["id"]]), abs=1e-3)
            assert c["photos"]


def test_the_classifier_weighs_local_matches_as_the_retriever_does(two_models):
    """With knn.local, fold k's classifier probabilities are re-scored like knn's scores: each of a
    query's local_top whales gets (1 - w) * p + w * count / (count + scale), count the best match count
    over the whale's local_photos gallery photos nearest the query; every other whale (1 - w) * p."""
    import copy

    from pipeline.config import load_stage_config
    from pipeline.data.cache import ImageCache
    from pipeline.ensemble import methods as M
    from pipeline.ensemble.features import concatenated
    from pipeline.io.paths import embedding_dir
    from pipeline.retrieval.local.collect import match_counts
    from pipeline.retrieval.local.extract import DescriptorStore

    work, configs, folds_file, sets = two_models
    cfg = load_stage_config(configs, overrides=TINY_SETS)
    folds = read_folds(folds_file)
    models = [{"name": "demo_triplet", "weight": 1.0}]
    test_names = ImageCache.open(work).split(C.TEST)[C.IMAGE].to_numpy()
    plain_cfg = copy.deepcopy(cfg)
    plain_cfg["ensemble"]["classifier"]["local"] = False
    plain = M.classifier(work, models, folds, [0], test_names, plain_cfg)[0]
    assert (plain.groupby(C.IMAGE)[C.SCORE].sum() <= 1 + 1e-5).all()  # without local: probabilities
    local = M.classifier(work, models, folds, [0], test_names, cfg)[0]
    k = cfg["knn"]
    w, scale = float(k["local_weight"]), float(k["local_scale"])
    store = DescriptorStore.open(work, k["local_keypoints"])
    gallery = folds[(folds[C.FOLD] != 0) & (folds[C.ID] != C.NEW_WHALE)]
    features = concatenated([embedding_dir(work, "demo_triplet", 0)], [1.0], gallery[C.IMAGE], C.TRAIN)
    for query in sorted(plain[C.IMAGE].unique())[:3]:
        mine = plain[plain[C.IMAGE] == query]
        q = concatenated([embedding_dir(work, "demo_triplet", 0)], [1.0], [query], C.TRAIN)[0]
        shortlist = set(mine[C.ID].head(int(k["local_top"])))
        expected = {}
        for whale, p in zip(mine[C.ID], mine[C.SCORE]):
            if whale not in shortlist:
                expected[whale] = (1 - w) * p
                continue
            rows = np.flatnonzero(gallery[C.ID].to_numpy() == whale)
            nearest = rows[np.argsort(-(features[rows] @ q), kind="stable")[: int(k["local_photos"])]]
            photos = store.get(gallery[C.IMAGE].to_numpy()[nearest], C.TRAIN)
            count = int(match_counts(store.get([query], C.TRAIN)[0], photos, float(k["local_ratio"])).max())
            expected[whale] = (1 - w) * p + w * count / (count + scale)
        got = local[local[C.IMAGE] == query].set_index(C.ID)[C.SCORE].to_dict()
        assert got == pytest.approx(expected, abs=1e-5)


def test_train_all_budget_is_shared_by_the_members_that_train_the_network(capsys):
    """make train-all BUDGET=B: B per fold split over the members with train.epochs != 0; a head on frozen
    features and a training-free member take none ('-'), so the ensemble spends what one model would."""
    from pipeline.ensemble.budget import member_budgets

    names = ["coupled_clusters", "lite0_head", "triplet_hard", "colour_histogram"]
    assert member_budgets(names, 6.0, REPO / "configs") == {"coupled_clusters": 3.0, "lite0_head": None,
                                                          "triplet_hard": 3.0, "colour_histogram": None}
    assert member_budgets(names, None, REPO / "configs") == dict.fromkeys(names)
    models = "[{name: coupled_clusters}, {name: lite0_head}, {name: triplet_hard}]"
    assert main(["ensemble", "--configs", str(REPO / "configs"), "--list-models", "--budget", "6",
                 "--set", f"ensemble.models={models}"]) == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["coupled_clusters 3", "lite0_head -", "triplet_hard 3"]
