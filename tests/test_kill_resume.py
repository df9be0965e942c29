"""Training killed with SIGKILL mid-epoch resumes from its last checkpoint and ends with exactly the
weights of an uninterrupted run with the same seed."""
import os
import signal
import subprocess
import sys
import time

import torch

from pipeline.cli import main
from tests.conftest import REPO, prepare_twins, train_argv

SETS = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "sampler.classes_per_batch=4",
        "sampler.photos_per_class=2", "train.epochs=4"]




def test_sigkill_then_resume_equals_uninterrupted(tiny_synth, tmp_path):
    folds_file = prepare_twins(tiny_synth, tmp_path, SETS)

    assert main(train_argv(tmp_path / "a", folds_file, SETS)) == 0  # uninterrupted

    fold_dir = tmp_path / "b" / "models" / "test_arcface" / "fold0"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WHALE_STEP_DELAY": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *train_argv(tmp_path / "b", folds_file, SETS)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (fold_dir / "last.pt").exists():  # epoch 1 is done; epoch 2 is under way
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (fold_dir / "final.pt").exists()
    saved_epoch = torch.load(fold_dir / "last.pt", weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 4

    assert main(train_argv(tmp_path / "b", folds_file, SETS)) == 0  # resumes from last.pt
    a = torch.load(tmp_path / "a" / "models" / "test_arcface" / "fold0" / "final.pt", weights_only=True)["model"]
    b = torch.load(fold_dir / "final.pt", weights_only=True)["model"]
    assert not list(fold_dir.glob(".*.tmp-*"))  # a temp file a kill left mid-write is cleared on resume
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
