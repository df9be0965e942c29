"""DDP on the CPU: torchrun with two gloo processes against one process with the same global batch."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.cli import main
from tests.conftest import REPO, prepare_twins, train_argv

# A network without batch statistics (layer norms only): the two runs must then take the same steps.
SETS = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=6",
        "sampler.photos_per_class=2", "train.epochs=3", "train.warmup_epochs=0",
        "model.backbone=test_convnext", "model.neck_norm=layer"]





# Plain, and with the samplers whose state is learned during training (ranks must agree on it).
@pytest.mark.parametrize("extra", [[], ["loss.name=triplet", "sampler.hard_classes=true"],
                                   ["loss.name=triplet", "divide.clusters=2", "divide.every_epochs=1"]],
                         ids=["arcface", "hard_classes", "divide_and_conquer"])
def test_two_processes_match_one(tiny_synth, tmp_path, extra):
    sets = SETS + extra
    folds_file = prepare_twins(tiny_synth, tmp_path, sets, ("one", "two"))

    assert main(train_argv(tmp_path / "one", folds_file, sets)) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "pipeline",
                          *train_argv(tmp_path / "two", folds_file, sets)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    one = pd.read_csv(tmp_path / "one" / "models" / "test_arcface" / "fold0" / "log.csv")
    two = pd.read_csv(tmp_path / "two" / "models" / "test_arcface" / "fold0" / "log.csv")
    print("one process:", list(one["loss"]), "two processes:", list(two["loss"]))
    assert list(one["steps"]) == list(two["steps"])  # the same global batches per epoch
    # Equal halves of every batch: the mean of the two ranks' losses is the whole batch's loss, and the
    # averaged gradients are the whole batch's gradient; only float summation order differs.
    assert (abs(one["loss"] - two["loss"]) / one["loss"]).max() < 1e-3, (one["loss"], two["loss"])
    # Only rank 0 writes: its hooks log each epoch once, and nothing but its files is there.
    assert run.stderr.count("epoch 3: loss") == 1
    written = sorted(p.name for p in (tmp_path / "two" / "models" / "test_arcface" / "fold0").iterdir())
    assert written == ["config.yaml", "final.pt", "last.pt", "log.csv"]
