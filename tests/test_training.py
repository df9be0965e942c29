"""Training: resume continues where it stopped, the time budget stops cleanly, a foreign checkpoint is refused."""
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.config import load_stage_config
from pipeline.data.cache import ImageCache
from pipeline.data.samplers import PKBatchSampler
from pipeline.errors import PipelineError
from pipeline.stages.folds import read_folds
from pipeline.training.fit import fit
from tests.conftest import REPO

SMALL = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
         "sampler.photos_per_class=2"]


@pytest.fixture(scope="module")
def prepared(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    sets = [x for s in SMALL for x in ("--set", s)]
    assert main(["preprocess", "--data", str(tiny_synth), "--work", str(work), *sets]) == 0
    assert main(["folds", "--work", str(work), "--folds-file", str(work / "folds.csv"), *sets]) == 0
    return ImageCache.open(work), read_folds(work / "folds.csv")


def config(*extra):
    return load_stage_config(REPO / "configs", "test_arcface", [*SMALL, *extra])


def test_resume_continues_and_matches_an_uninterrupted_run(prepared, tmp_path):
    cache, folds = prepared
    fit(config("train.epochs=2"), cache, folds, 0, tmp_path / "a")
    # Same run asked for 4 epochs: resumes at epoch 2 from last.pt and does only the rest.
    result = fit(config("train.epochs=4"), cache, folds, 0, tmp_path / "a")
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4] and result["epochs"] == 4


def test_time_budget_stops_cleanly(prepared, tmp_path):
    cache, folds = prepared
    result = fit(config("train.epochs=1000", "train.time_budget_min=0.02"), cache, folds, 0, tmp_path / "b")
    assert result["epochs"] < 1000
    state = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert state["epochs"] == result["epochs"] and (tmp_path / "b" / "config.yaml").is_file()


def test_resume_with_another_config_is_refused(prepared, tmp_path):
    cache, folds = prepared
    fit(config("train.epochs=1"), cache, folds, 0, tmp_path / "c")
    with pytest.raises(PipelineError, match=r"last\.pt: checkpoint was trained with a different 'model' config"):
        fit(config("train.epochs=2", "model.embedding_dim=32"), cache, folds, 0, tmp_path / "c")


def test_pk_batches_hold_k_photos_of_p_whales_and_repeat_per_epoch():
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    sampler = PKBatchSampler(labels, 4, 3, seed=1)
    sampler.set_epoch(2)
    batches = list(sampler)
    for batch in batches:
        counts = pd.Series(labels[[i for i, _ in batch]]).value_counts()
        assert len(counts) == 4 and (counts == 3).all()
    sampler.set_epoch(2)
    assert list(sampler) == batches
    sampler.set_epoch(3)
    assert list(sampler) != batches
    # Two DDP ranks split each global batch between them, seeds included.
    halves = [PKBatchSampler(labels, 4, 3, seed=1, rank=r, world=2) for r in (0, 1)]
    for h in halves:
        h.set_epoch(2)
    for whole, first, second in zip(batches, *halves):
        assert sorted(first + second) == sorted(whole)
