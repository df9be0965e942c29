"""`make gpu-check`: does the GPU path work on this machine?

  1. the demo chain (small) trains, embeds and searches on the GPU with AMP;
  2. faiss's GPU search returns the same top five as its CPU search on the same embeddings;
  3. DDP over NCCL trains with two processes (when two or more GPUs are present).

Each check prints PASS, FAIL or SKIP with the reason; the exit code is 1 when any check failed, else 0
(a machine without CUDA skips everything and exits 0).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SMALL = ["preprocess.image_size=[64,128]", "folds.n_folds=2", "train.epochs=2", "train.amp=true"]


def report(status: str, name: str, detail: str) -> str:
    print(f"{status:<4}  {name}: {detail}", flush=True)
    return status


def demo_chain(work: Path, data: Path) -> str:
    import torch

    from pipeline.chain import run_chain
    from pipeline.data.synth import SynthSpec, make_dataset

    make_dataset(data, SynthSpec(n_whales=30, photo_size=(96, 192), seed=1), progress=False)
    submission = run_chain(data, work, "demo_triplet", REPO / "configs", SMALL)
    state = torch.load(work / "models" / "demo_triplet" / "fold0" / "final.pt", map_location="cpu", weights_only=True)
    if state["steps"] == 0:
        return report("FAIL", "demo chain on the GPU", "no training step was taken")
    return report("PASS", "demo chain on the GPU with AMP",
                  f"{state['steps']} steps on {torch.cuda.get_device_name(0)}; submission {submission}")


def faiss_gpu_matches_cpu(n_gallery: int = 50_000, n_queries: int = 2_000, dim: int = 256) -> str:
    import faiss

    if not (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0):
        return report("FAIL", "faiss GPU search", "faiss sees no GPU: install the GPU build "
                                                  "(pip install -e '.[gpu]', which replaces faiss-cpu)")
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((n_gallery, dim)).astype(np.float32)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(gallery)
    cpu_sims, cpu_idx = cpu.search(queries, 5)
    gpu = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
    gpu.add(gallery)
    gpu_sims, gpu_idx = gpu.search(queries, 5)
    same = (cpu_idx == gpu_idx).mean()
    # Where two neighbours tie to float precision their order may differ; their similarities may not.
    close = np.abs(cpu_sims - gpu_sims).max()
    ok = same >= 0.999 and close < 1e-4
    return report("PASS" if ok else "FAIL", "faiss GPU search equals CPU search",
                  f"top-5 identical for {100 * same:.2f}% of {n_queries} queries over {n_gallery} x {dim}, "
                  f"largest similarity difference {close:.2e}")


def ddp_nccl(work: Path) -> str:
    import torch

    if torch.cuda.device_count() < 2:
        return report("SKIP", "DDP over NCCL", f"{torch.cuda.device_count()} GPU(s); needs two or more")
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pipeline", "train", "--work", str(work),
            "--configs", str(REPO / "configs"), "--model", "demo_triplet", "--folds-file", str(work / "folds.csv"),
            "--folds", "0", "--restart", *(x for s in SMALL for x in ("--set", s))]
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if run.returncode != 0:
        return report("FAIL", "DDP over NCCL", run.stderr.strip().splitlines()[-1] if run.stderr else "no output")
    return report("PASS", "DDP over NCCL", "two processes trained fold 0 (SyncBatchNorm, NCCL collectives)")


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        why = f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"
        for name in ("demo chain on the GPU with AMP", "faiss GPU search equals CPU search", "DDP over NCCL"):
            report("SKIP", name, why)
        return 0
    os.environ.setdefault("WHALE_PROGRESS", "lines")
    results = []
    with tempfile.TemporaryDirectory(prefix="whale-gpu-check-") as tmp:
        work, data = Path(tmp) / "work", Path(tmp) / "data"
        for check in (lambda: demo_chain(work, data), faiss_gpu_matches_cpu, lambda: ddp_nccl(work)):
            try:
                results.append(check())
            except Exception as e:  # a failed check must not hide the others
                results.append(report("FAIL", getattr(check, "__name__", "check"), f"{type(e).__name__}: {e}"))
    return 1 if "FAIL" in results else 0


if __name__ == "__main__":
    sys.exit(main())
