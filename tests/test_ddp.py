"""DDP on the CPU: torchrun with two gloo processes against one process with the same global batch."""
import os
import re
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

# A time budget (docs/training.md's fine-tune command has one), with rank 1's clock running 10 000 times fast:
# were each rank to read its own clock, rank 1 would lower its learning rate, switch divide and conquer to
# fine-tuning alone (skipping a broadcast rank 0 makes) and call the budget spent after a fraction of a
# second. Every rank reads rank 0's clock, so the run still takes the one-process run's steps.
BUDGET = ["train.time_budget_min=60", "loss.name=triplet", "divide.clusters=2", "divide.every_epochs=1",
          "divide.finetune_share=0.5"]


# Plain, and with the samplers whose state is learned during training (ranks must agree on it).
@pytest.mark.parametrize("extra,env", [([], {}), (["loss.name=triplet", "sampler.hard_classes=true"], {}),
                                       (["loss.name=triplet", "divide.clusters=2", "divide.every_epochs=1"], {}),
                                       (BUDGET, {"WHALE_TEST_FAST_CLOCK": "1:10000"}),
                                       (["train.accumulate_steps=2", "model.grad_checkpointing=true"], {})],
                         ids=["arcface", "hard_classes", "divide_and_conquer", "budget_with_a_fast_clock",
                              "memory_levers"])
def test_two_processes_match_one(tiny_synth, tmp_path, extra, env):
    sets = SETS + extra
    folds_file = prepare_twins(tiny_synth, tmp_path, sets, ("one", "two"))

    assert main(train_argv(tmp_path / "one", folds_file, sets)) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    # Every collective of ours checks its tensors' device against the backend's (tests/collective_check.py).
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "tests.collective_check",
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
    # Both ranks ran the device checks on every collective: the loss's gather, the stop vote, the mean.
    checked = re.findall(r"collectives checked: \{[^}]*\}", run.stderr)  # one per rank (lines may interleave)
    assert len(checked) == 2 and all("all_gather" in c and "all_reduce" in c for c in checked), checked
    assert all("broadcast" in c for c in checked)  # rank 0's clock after every step (and the clusters)
    # Only rank 0 writes: its hooks log each epoch once, and nothing but its files is there.
    assert run.stderr.count("epoch 3: loss") == 1
    written = sorted(p.name for p in (tmp_path / "two" / "models" / "test_arcface" / "fold0").iterdir())
    assert written == ["config.yaml", "final.pt", "last.pt", "log.csv"]


def test_every_collective_uses_the_backends_device_when_the_backend_is_nccl(monkeypatch):
    """Without a GPU: each collective call site of the pipeline, told the backend is NCCL, must hand its
    tensors to the device NCCL requires. The meta device stands in for the rank's GPU (tensors there
    have shapes but no data), so the calls are checked, then skipped."""
    import contextlib

    import numpy as np
    import torch

    from pipeline.training import distributed
    from tests import collective_check

    assert distributed.backend_device("nccl", 1) == torch.device("cuda", 1)
    assert distributed.backend_device("gloo", 1) == torch.device("cpu")
    gpu = torch.device("meta")
    monkeypatch.setattr(distributed, "backend_device", lambda backend, rank: gpu if backend == "nccl" else torch.device("cpu"))
    originals = collective_check.require(lambda: gpu, replace=lambda name: lambda *a, **k: None)
    try:
        info = distributed.DistInfo(rank=0, world=2, local_rank=0, backend="nccl")
        collective_check.counts.clear()
        for call in (lambda: info.mean(1.0), lambda: info.any(True), lambda: info.gather(torch.zeros(3)),
                     lambda: info.broadcast(torch.zeros(3)), lambda: info.broadcast_array(np.zeros(4, np.int64)),
                     lambda: info.broadcast_float(12.5)):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # reading a meta tensor's value
                call()
        embeddings = torch.zeros(4, 8, device=gpu, requires_grad=True)  # the model's output, on the GPU
        distributed.gather_with_grad(embeddings, info).sum().backward()
        assert collective_check.counts == {"all_reduce": 3, "all_gather": 2, "broadcast": 3}, collective_check.counts
    finally:
        collective_check.restore(originals)


def test_batch_norm_is_synchronised_across_gpus_only():
    import torch

    from pipeline.training.distributed import DistInfo, prepare_model

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                   torch.nn.BatchNorm1d(4))

    synced = prepare_model(net(), DistInfo(rank=0, world=2, backend="nccl"))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == 2
    kept = prepare_model(net(), DistInfo(rank=0, world=2, backend="gloo"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in kept.modules())


def test_only_the_distributed_module_calls_collectives():
    """Every collective goes through training/distributed.py, which puts tensors on the backend's device."""
    import re

    calls = re.compile(r"(?<![.\w])dist\.(all_reduce|all_gather|broadcast|reduce|scatter|gather|all_to_all)\w*\(")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "pipeline").rglob("*.py")
                 if p.name != "distributed.py" and calls.search(p.read_text())]
    assert offenders == []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_train_runs_over_two_machines(tiny_synth, tmp_path):
    """Two "machines" on this one (NNODES=2, one process each), launched by `make train` exactly as on
    two hosts: torchrun's c10d rendezvous at RDZV_ENDPOINT forms one job of two ranks."""
    sets = SETS + ["train.epochs=1"]
    folds_file = prepare_twins(tiny_synth, tmp_path, sets, ("job",))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    make = ["make", "-s", "-o", "install", "train", "NNODES=2", "NPROC=1", f"RDZV_ENDPOINT=127.0.0.1:{free_port()}",
            f"RDZV_ID=test-{os.getpid()}", f"WORK={tmp_path / 'job'}", "MODEL=test_arcface", "FOLDS=0",
            f"FOLDS_FILE={folds_file}", "SET=" + " ".join(sets)]
    machines = [subprocess.Popen(make, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(2)]
    outputs = [m.communicate(timeout=600)[0] for m in machines]
    assert all(m.returncode == 0 for m in machines), outputs[0][-2000:] + outputs[1][-2000:]
    import torch

    state = torch.load(tmp_path / "job" / "models" / "test_arcface" / "fold0" / "final.pt", weights_only=True)
    assert state["processes"] == 2 and state["steps"] > 0
