"""`make gpu-check`: does the GPU path work on this machine?

  0. torch can run on the GPU that nvidia-smi lists (a CPU-only wheel, or a driver too old for the
     wheel's CUDA, is a FAIL here, not a quiet skip of everything else);
  1. the demo chain trains and embeds on CUDA with mixed precision (read back from final.pt);
  2. retrieval/index.py's flat and IVF indexes on the GPU return the CPU's top five;
  3. DDP over NCCL with ArcFace (a loss with parameters): two processes take the steps of one
     (2+ GPUs), as tests/test_ddp.py checks on gloo;
  4. timings: one training step and one embedding batch of the MegaDescriptor-L-384 network
     (random weights, the fine-tuning recipe's batch, AMP, gradient checkpointing), printed.

Each check prints PASS, FAIL, SKIP or TIME with its reason or figures; the exit code is 1 when any
check failed, else 0. A machine without an NVIDIA driver skips everything and exits 0.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.io.paths import cache_dir, embedding_dir, model_dir, own_folds_file

REPO = Path(__file__).resolve().parents[2]
SMALL = ["preprocess.image_size=[64,128]", "folds.n_folds=2", "train.epochs=2", "train.amp=true"]
# As tests/test_ddp.py: no batch statistics, so one process and two take the same steps; full precision
# so that only summation order differs.
DDP_SETS = ["preprocess.image_size=[64,128]", "folds.n_folds=2", "sampler.classes_per_batch=6",
            "sampler.photos_per_class=2", "train.epochs=3", "train.warmup_epochs=0", "train.amp=false",
            "model.backbone=test_convnext", "model.neck_norm=layer"]
CHECKS = ("torch on the GPU", "demo chain on CUDA with AMP", "retrieval index flat: GPU equals CPU",
          "retrieval index ivf: GPU equals CPU", "DDP over NCCL with ArcFace: two processes match one",
          "timing: training step and embedding batch")


def report(status: str, name: str, detail: str) -> str:
    print(f"{status:<4}  {name}: {detail}", flush=True)
    return status


def nvidia_gpus() -> list[str]:
    """The GPUs the NVIDIA driver lists (`nvidia-smi -L`); [] where there is no driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        run = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"nvidia-smi is installed but failed ({type(e).__name__})"]
    return [line.strip() for line in run.stdout.splitlines() if line.startswith("GPU ")] or \
        ([f"nvidia-smi is installed but failed: {run.stderr.strip()[:200]}"] if run.returncode else [])


def torch_build() -> str:
    import torch

    return f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none (a CPU-only wheel)'}"


def torch_on_gpu() -> tuple[bool, str]:
    """Whether torch can run a kernel on the GPU, and what it says either way."""
    import torch

    build = torch_build()
    if not torch.cuda.is_available():
        return False, f"{build} cannot use it (a CPU-only wheel, or a driver older than the wheel's CUDA)"
    try:
        value = (torch.arange(8, device="cuda", dtype=torch.float32) * 2).sum().item()
    except Exception as e:  # e.g. no kernel image for this GPU's architecture
        return False, f"{build}: a CUDA kernel fails ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    if value != 56:
        return False, f"{build}: a CUDA kernel computed {value}, not 56"
    return True, f"{build} on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU(s))"


def demo_chain(work: Path, data: Path) -> str:
    import torch

    from pipeline.chain import run_chain
    from pipeline.data.synth import SynthSpec, make_dataset

    name = CHECKS[1]
    make_dataset(data, SynthSpec(n_whales=30, photo_size=(96, 192), seed=1), progress=False)
    submission = run_chain(data, work, "demo_triplet", REPO / "configs", SMALL)
    state = torch.load(model_dir(work, "demo_triplet", 0) / "final.pt", map_location="cpu", weights_only=True)
    ran = f"{state.get('steps')} steps on {state.get('device')} in {state.get('precision')}"
    if not state.get("steps"):
        return report("FAIL", name, f"no training step was taken ({ran})")
    if not str(state.get("device", "")).startswith("cuda") or state.get("precision") not in ("float16", "bfloat16"):
        return report("FAIL", name, f"training did not run on CUDA with AMP: {ran}")
    embedded = np.load(embedding_dir(work, "demo_triplet", 0) / "test.npy")
    return report("PASS", name, f"{ran}; {len(embedded)} test photos embedded; submission {submission}")


def retrieval_index(kind: str, n_gallery: int = 100_000, n_queries: int = 2_000, dim: int = 256) -> str:
    """The pipeline's own index (retrieval/index.py) on the GPU against the same module on the CPU."""
    from pipeline.retrieval import index

    name = CHECKS[2] if kind == "flat" else CHECKS[3]
    if not index.gpu_available():
        return report("FAIL", name, "faiss sees no GPU: `make install` on this machine installs the GPU build "
                                    "(FAISS=gpu) in place of faiss-cpu")
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((n_gallery, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    built = index.build_index(gallery, kind)
    where = type(built).__name__
    if not any(word in where for word in ("Gpu", "Replicas", "Shards")):
        return report("FAIL", name, f"build_index returned a {where}, not a GPU index")
    start = time.perf_counter()
    gpu_sims, gpu_idx = built.search(queries, 5)
    gpu_s = time.perf_counter() - start
    available = index.gpu_available
    index.gpu_available = lambda: False  # the same module, held to the CPU
    try:
        start = time.perf_counter()
        cpu_sims, cpu_idx = index.search(gallery, queries, 5, kind)
        cpu_s = time.perf_counter() - start
    finally:
        index.gpu_available = available
    same = float((cpu_idx == gpu_idx).mean())
    close = float(np.abs(cpu_sims - gpu_sims).max())
    # Near-ties may swap order (and IVF's cells may differ at float precision); similarities may not.
    ok = same >= (0.999 if kind == "flat" else 0.98) and close < 1e-3
    return report("PASS" if ok else "FAIL", name,
                  f"{where}; top-5 identical for {100 * same:.2f}% of {n_queries} queries over {n_gallery} x {dim}, "
                  f"largest similarity difference {close:.1e}; search {gpu_s * 1e3:.0f} ms (GPU) vs "
                  f"{cpu_s * 1e3:.0f} ms (CPU, build included)")


def ddp_arcface(work: Path) -> str:
    import torch

    name = CHECKS[4]
    if torch.cuda.device_count() < 2:
        return report("SKIP", name, f"{torch.cuda.device_count()} GPU(s); needs two or more")
    ok, detail = one_against_two(work)
    if ok and not detail.startswith("2 processes on cuda"):
        ok, detail = False, "did not train on the GPUs: " + detail
    return report("PASS" if ok else "FAIL", name, detail)


def one_against_two(work: Path) -> tuple[bool, str]:
    """test_arcface (ArcFace's class centres are parameters DDP must keep in step) trained on fold 0 of
    `work`'s cache by one process and by two under torchrun; (same steps and losses?, what was seen)."""
    import pandas as pd
    import torch

    runs = {}
    for label, launcher in (("one", [str(Path(sys.executable).with_name("whale"))]),
                            ("two", [str(Path(sys.executable).with_name("torchrun")), "--standalone",
                                     "--nproc_per_node=2", "-m", "pipeline"])):
        target = work.parent / f"ddp-{label}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cache_dir(work), cache_dir(target))
        argv = [*launcher, "train", "--work", str(target), "--configs", str(REPO / "configs"), "--model", "test_arcface",
                "--folds-file", str(own_folds_file(work)), "--folds", "0", "--restart",
                *(x for s in DDP_SETS for x in ("--set", s))]
        run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1200)
        if run.returncode != 0:
            return False, f"{label} process(es): " + (run.stderr.strip().splitlines() or ["no output"])[-1]
        fold = model_dir(target, "test_arcface", 0)
        runs[label] = (pd.read_csv(fold / "log.csv"), torch.load(fold / "final.pt", map_location="cpu", weights_only=True))
    (one, _), (two, state) = runs["one"], runs["two"]
    gap = float((abs(one["loss"] - two["loss"]) / one["loss"]).max())
    ok = list(one["steps"]) == list(two["steps"]) and gap < 1e-2 and state.get("processes") == 2
    return ok, (f"{state.get('processes')} processes on {state.get('device')}; steps {list(two['steps'])} vs "
                f"{list(one['steps'])}; losses {list(two['loss'])} vs {list(one['loss'])} (largest relative gap "
                f"{gap:.1e})")


def timings(device_name: str = "cuda", sets=("model.backbone=swin_large_patch4_window12_384",
                                            "model.pretrained=false"), batches: int = 5) -> str:
    """One optimiser step (the Trainer's own) and one embedding batch of MegaDescriptor-L-384's network
    (random weights: the figures are about compute, not accuracy), with the fine-tuning recipe's
    batch, AMP and gradient checkpointing."""
    import torch

    from pipeline.config import load_stage_config
    from pipeline.losses import build_loss
    from pipeline.models import build_model
    from pipeline.models.embedding import embed_rows
    from pipeline.models.net import set_grad_checkpointing
    from pipeline.training.device import amp_dtype, precision_name
    from pipeline.training.loop import Trainer
    from pipeline.training.optim import build_optimizer

    name = CHECKS[5]
    cfg = load_stage_config(REPO / "configs", "megadescriptor_finetune", list(sets))
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t = cfg["train"]
    size = tuple(cfg["model"]["input_size"])
    batch = int(cfg["sampler"]["classes_per_batch"]) * int(cfg["sampler"]["photos_per_class"])
    net = build_model(cfg, size)
    set_grad_checkpointing(net, bool(cfg["model"]["grad_checkpointing"]))
    net = net.to(device)
    loss = build_loss(cfg, 1000, net.embedding_dim).to(device)
    precision = amp_dtype(device, bool(t["amp"]), str(t["amp_dtype"]))
    loader = type("Loader", (), {"batch_sampler": [None]})()  # the Trainer only counts its batches here
    trainer = Trainer(net, loss, build_optimizer(net, loss, cfg), loader, device, 1, cfg, 0, precision=precision,
                      grad_clip=t["grad_clip"], accumulate_steps=int(t["accumulate_steps"]))
    images = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8, device=device)
    labels = torch.arange(batch, device=device) // int(cfg["sampler"]["photos_per_class"])
    groups = torch.full((batch,), -1, device=device)
    embed_batch = int(cfg["embed"]["batch_size"])
    photos = np.random.default_rng(0).integers(0, 256, (2 * embed_batch, *size, 3), dtype=np.uint8)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        net.train()
        trainer._step(images, labels, groups)  # warm-up: cuDNN autotuning, the allocator
        sync()
        start = time.perf_counter()
        for _ in range(batches):
            trainer._step(images, labels, groups)
        sync()
        step_s = (time.perf_counter() - start) / batches
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
        embed = lambda: embed_rows(net, photos, np.arange(len(photos)), embed_batch, True, device,  # noqa: E731
                                   amp=bool(t["amp"]), amp_dtype=str(t["amp_dtype"]))
        embed()
        sync()
        start = time.perf_counter()
        embed()
        sync()
        embed_s = (time.perf_counter() - start) / 2
    except torch.cuda.OutOfMemoryError:
        return report("FAIL", name, f"out of GPU memory at a batch of {batch} (set train.accumulate_steps)")
    return report("TIME", name, f"{net.spec['architecture']} at {size[0]} x {size[1]} on {device}, "
                                f"{precision_name(precision)}, gradient checkpointing {cfg['model']['grad_checkpointing']}: "
                                f"{step_s * 1e3:.0f} ms per training step of {batch} photos ({batch / step_s:.1f} "
                                f"photos/s{peak}); {embed_s * 1e3:.0f} ms per embedding batch of {embed_batch} photos "
                                f"with flip TTA ({embed_batch / embed_s:.1f} photos/s)")


def main() -> int:
    gpus = nvidia_gpus()
    usable, why = torch_on_gpu()
    if not usable:
        if gpus:  # the machine has a GPU and the pipeline would silently train on the CPU
            report("FAIL", CHECKS[0], f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}), but {why}")
            for check in CHECKS[1:]:
                report("SKIP", check, "torch cannot use the GPU")
            return 1
        # One line per area: the training chain, search, several GPUs.
        for checks in (CHECKS[:2], CHECKS[2:4], CHECKS[4:]):
            report("SKIP", "; ".join(checks), f"no CUDA device and no NVIDIA driver ({torch_build()})")
        return 0
    os.environ.setdefault("WHALE_PROGRESS", "lines")
    results = [report("PASS", CHECKS[0], why)]
    with tempfile.TemporaryDirectory(prefix="whale-gpu-check-") as tmp:
        work, data = Path(tmp) / "work", Path(tmp) / "data"
        checks = (lambda: demo_chain(work, data), lambda: retrieval_index("flat"), lambda: retrieval_index("ivf"),
                  lambda: ddp_arcface(work), timings)
        for name, check in zip(CHECKS[1:], checks):
            try:
                results.append(check())
            except Exception as e:  # a failed check must not hide the others
                results.append(report("FAIL", name, f"{type(e).__name__}: {str(e)[:500]}"))
    return 1 if "FAIL" in results else 0


if __name__ == "__main__":
    sys.exit(main())
