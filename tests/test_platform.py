"""What a user's machine sees: one faiss build per install, `make gpu-check` on a machine without CUDA,
and progress that stays readable when the output goes to a log file."""
import os
import re
import subprocess
import sys


import pytest
import torch

from tests.conftest import REPO

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10, which pyproject allows: only the test that reads TOML skips
    tomllib = None


@pytest.mark.skipif(tomllib is None, reason="reading pyproject.toml needs tomllib (Python 3.11+)")
def test_each_install_gets_exactly_one_faiss_build():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    faiss = re.compile(r"^faiss[-_]?(cpu|gpu)?\b", re.IGNORECASE)
    assert not [d for d in project["dependencies"] if faiss.match(d)], "faiss must not be a base dependency"
    extras = project["optional-dependencies"]
    for extra, build in (("cpu", "faiss-cpu"), ("gpu", "faiss-gpu")):
        found = [d for d in extras[extra] if faiss.match(d)]
        assert len(found) == 1 and found[0].lower().startswith(build), (extra, found)
    assert not [d for d in extras["dev"] if faiss.match(d)]
    makefile = (REPO / "Makefile").read_text()
    assert "-e '.[dev,weights,$(FAISS)]'" in makefile  # make install names one of the two


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs for real")
def test_gpu_check_skips_everything_and_passes_without_cuda():
    run = subprocess.run([sys.executable, "-m", "pipeline.diagnostics.gpu_check"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("SKIP") and "no CUDA device" in line for line in lines), lines


def test_progress_in_a_log_file_is_plain_lines(tiny_synth, tmp_path):
    """stderr to a file (as in `make all > log 2>&1`): no carriage-return refreshes, short lines, and
    progress lines that say where training is."""
    sets = ["preprocess.image_size=[32,64]", "folds.n_folds=3", "train.epochs=3"]
    env = {**os.environ, "WHALE_PROGRESS_EVERY": "0", "PYTHONPATH": str(REPO)}
    env.pop("WHALE_PROGRESS", None)
    log = tmp_path / "log.txt"
    work = tmp_path / "w"
    common = ["--work", str(work), *(x for s in sets for x in ("--set", s))]
    for argv in (["preprocess", "--data", str(tiny_synth), *common],
                 ["folds", *common, "--folds-file", str(tmp_path / "folds.csv")],
                 ["train", *common, "--model", "test_arcface", "--folds-file", str(tmp_path / "folds.csv"),
                  "--folds", "0"]):
        with open(log, "a") as out:
            run = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=REPO, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, timeout=600)
        assert run.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "\r" not in text
    assert max(len(line) for line in text.splitlines()) < 300
    steps = [line for line in text.splitlines() if "train fold 0:" in line and " step " in line]
    assert steps and re.search(r"train fold 0: \d+/\d+ step \(\d+%\)", steps[-1]), steps
    assert any("preprocess:" in line and "photo" in line for line in text.splitlines())
