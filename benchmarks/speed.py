"""Speed and scale figures, each measured side by side in one run and printed against its goal.

    python -m benchmarks.speed [--parts datapath knn ivf scale] [--model <recipe>]

datapath  train images/s with augmentation / model-only forward+backward on random tensors (goal >= 0.85);
          embed images/s / model-only forward on the same photos, batches and dtype (goal >= 0.90).
loader    the input pipeline alone, no network: images/s per core at the recipe's size and at 256x512
          (goal >= 160 per core there: 2,500 on a 16-core GPU machine), and 1 -> 2 loader processes.
backbones seconds per training step and per embed batch for test_resnet, test_vit and a small Swin.
knn       the whole kNN stage (search, one score per whale, threshold, top five) on 8,000 queries x 25,000
          gallery x 512-d clustered embeddings with the humpback label distribution, / raw faiss flat
          search (goal <= 1.3); and its speed-up over a straightforward per-query Python loop.
ivf       an IVF index at 1M x 512: recall of the exact top five, and search speed-up over flat.
scale     a synthetic Kaggle-sized set (the real label file's 25,360 train + 7,960 test JPEGs of 1050x700, real label
          distribution) through preprocess: wall time (goal <= 10 min) and peak memory (goal <= 4 GiB).
crop      CV MAP@5 on nyala of the default recipe with and without the automatic crop, same budget (CV
          decides; MAP@5 against solution.csv is printed for the record).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO.parent / "shared" / "data" / "humpback_labels" / "train.csv"
CONFIGS = REPO / "configs"
RESULTS: list[dict] = []


def report(figure: str, value: float, goal: str, ok: bool | None, detail: str = "") -> None:
    RESULTS.append({"figure": figure, "value": value, "goal": goal,
                    "met": "n/a" if ok is None else ("yes" if ok else "NO"), "detail": detail})
    print(f"{figure}: {value} (goal {goal}) {detail}", flush=True)


def humpback_labels(n: int | None = None, seed: int = 0) -> np.ndarray:
    """Ids with the real competition's distribution (or a Zipf-like stand-in when the file is absent)."""
    if LABELS.is_file():
        ids = pd.read_csv(LABELS)["Id"].to_numpy()
    else:
        rng = np.random.default_rng(seed)
        ids = np.array([f"w_{int(x)}" for x in rng.zipf(1.6, size=25360) % 5004], dtype=object)
    return ids if n is None else ids[:n]


# ------------------------------------------------------------------------------------------- datapath

def datapath(model_name: str, steps: int = 12) -> None:
    import torch

    from pipeline.config import load_stage_config
    from pipeline.data.datasets import CachedPhotos
    from pipeline.data.samplers import PKBatchSampler
    from pipeline.data.transforms import train_transform
    from pipeline.losses import build_loss
    from pipeline.models import build_model
    from pipeline.models.embedding import embed_rows

    cfg = load_stage_config(CONFIGS, model_name)
    h, w = cfg["preprocess"]["image_size"]
    batch = cfg["sampler"]["classes_per_batch"] * cfg["sampler"]["photos_per_class"]
    torch.manual_seed(0)
    model = build_model(cfg)
    n = 1024
    labels = np.repeat(np.arange(n // 4), 4)
    loss = build_loss(cfg, n // 4, model.embedding_dim)
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss.parameters()), lr=1e-4)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "images.npy", rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))
        images = np.load(Path(tmp) / "images.npy", mmap_mode="r")

        def train_step(x, y):
            opt.zero_grad()
            value = loss(model(x), y)
            if value.requires_grad:
                value.backward()
                opt.step()

        def model_only() -> float:
            x, y = torch.randn(batch, 3, h, w), torch.from_numpy(labels[:batch])
            train_step(x, y)  # warm-up
            started = time.perf_counter()
            for _ in range(steps):
                train_step(x, y)
            return steps * batch / (time.perf_counter() - started)

        def with_data(workers: int) -> float:
            sampler = PKBatchSampler(labels, cfg["sampler"]["classes_per_batch"], cfg["sampler"]["photos_per_class"],
                                     seed=0, batches_per_epoch=steps + 1)
            loader = torch.utils.data.DataLoader(
                CachedPhotos(images, np.arange(n), labels, train_transform(cfg["augment"])),
                batch_sampler=sampler, num_workers=workers)
            it = iter(loader)
            x, y, _ = next(it)
            train_step(x, y)  # warm-up (and worker start-up) outside the clock
            started = time.perf_counter()
            for x, y, _ in it:
                train_step(x, y)
            return steps * batch / (time.perf_counter() - started)

        model.train()
        # Interleaved, so that the shared machine's noise hits both sides alike.
        model_rates, data_rates = [], []
        workers = int(cfg["train"]["workers"])
        for _ in range(2):
            model_rates.append(model_only())
            data_rates.append(with_data(workers))
        train_ratio = np.median(data_rates) / np.median(model_rates)
        report("train img/s with augmentation / model-only", round(train_ratio, 3), ">= 0.85", train_ratio >= 0.85,
               f"({np.median(data_rates):.1f} vs {np.median(model_rates):.1f} img/s, {cfg['model']['backbone']} "
               f"{h}x{w}, batch {batch}, workers {workers})")

        model.eval()
        rows = np.arange(256)

        # Like for like: the same photos, batch size, dtype (uint8 in, the model's InputAdapter converts)
        # and normalisation, already stacked as tensors; embed adds only the cache read and the copies out.
        from pipeline.data.transforms import to_tensor

        size = int(cfg["embed"]["batch_size"])
        stacked = [to_tensor(np.asarray(images[rows[s:s + size]])) for s in range(0, len(rows), size)]

        @torch.no_grad()
        def forward_only() -> float:
            started = time.perf_counter()
            for x in stacked:
                torch.nn.functional.normalize(model(x).float(), dim=1)
            return len(rows) / (time.perf_counter() - started)

        def embed(flip: bool) -> float:
            started = time.perf_counter()
            embed_rows(model, images, rows, cfg["embed"]["batch_size"], flip, torch.device("cpu"))
            return len(rows) / (time.perf_counter() - started)

        forward_only()
        fwd, emb, emb_flip = [], [], []
        for _ in range(2):
            fwd.append(forward_only())
            emb.append(embed(False))
            emb_flip.append(embed(True))
        ratio = np.median(emb) / np.median(fwd)
        report("embed img/s / model-only forward", round(ratio, 3), ">= 0.90", ratio >= 0.90,
               f"({np.median(emb):.1f} vs {np.median(fwd):.1f} img/s; with flip TTA, which runs the network "
               f"twice by design: {np.median(emb_flip):.1f} img/s)")


# --------------------------------------------------------------------------------------------- loader

def _float_photos():
    import torch

    from pipeline.data.datasets import CachedPhotos

    class FloatPhotos(CachedPhotos):
        """Items as float32 normalised on the CPU, as the data path did before normalisation moved into
        the network: the comparison for the uint8 path."""

        def __getitem__(self, item):
            image, label, group = super().__getitem__(item)
            mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255
            std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255
            return (image.float() - mean) / std, label, group

    return FloatPhotos


def loader(model_name: str, n: int = 384, batches: int = 10) -> None:
    """The input pipeline alone (cache read, augmentation, collation; no network): images/s per core at
    the recipe's image size and at 256 x 512, with 0 (the main process), 1 and 2 loader processes."""
    import torch

    from pipeline.config import load_stage_config
    from pipeline.data.datasets import CachedPhotos
    from pipeline.data.samplers import PKBatchSampler
    from pipeline.data.transforms import train_transform

    FloatPhotos = _float_photos()
    cfg = load_stage_config(CONFIGS, model_name)
    p, k = cfg["sampler"]["classes_per_batch"], cfg["sampler"]["photos_per_class"]
    labels = np.repeat(np.arange(n // k), k)
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    for h, w in (tuple(cfg["preprocess"]["image_size"]), (256, 512)):
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "images.npy", rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))
            images = np.load(Path(tmp) / "images.npy", mmap_mode="r")
            rates = {}
            for workers in (0, 1, 2):
                sampler = PKBatchSampler(labels, p, k, seed=0, batches_per_epoch=batches + 2)
                data = torch.utils.data.DataLoader(CachedPhotos(images, np.arange(n), labels,
                                                                train_transform(cfg["augment"])),
                                                   batch_sampler=sampler, num_workers=workers)
                it = iter(data)
                next(it), next(it)  # worker start-up outside the clock
                started = time.perf_counter()
                count = sum(len(x) for x, _, _ in it)
                rates[workers] = count / (time.perf_counter() - started)
            # Side by side: the same loader when items are float32, normalised on the CPU (the old path).
            sampler = PKBatchSampler(labels, p, k, seed=0, batches_per_epoch=batches + 2)
            data = torch.utils.data.DataLoader(FloatPhotos(images, np.arange(n), labels, train_transform(cfg["augment"])),
                                               batch_sampler=sampler, num_workers=0)
            it = iter(data)
            next(it), next(it)
            started = time.perf_counter()
            float_rate = sum(len(x) for x, _, _ in it) / (time.perf_counter() - started)
            per_core = max(rates[0], rates[1])  # one core's worth: the main process, or one worker
            goal = ">= 160" if (h, w) == (256, 512) else "report"
            report(f"data path img/s per core at {h}x{w}", round(per_core, 1), goal,
                   per_core >= 160 if (h, w) == (256, 512) else None,
                   f"(main process {rates[0]:.0f}, 1 worker {rates[1]:.0f}, 2 workers {rates[2]:.0f} img/s; "
                   f"batch {p * k}, uint8 to the device; float32 normalised on the CPU: {float_rate:.0f} img/s "
                   "in the main process)")
            report(f"data path scaling 1 -> 2 loader processes at {h}x{w}", round(rates[2] / rates[1], 2),
                   "report (2 cores here)", None)


# ------------------------------------------------------------------------------------------ backbones

BACKBONES = {  # name -> config overrides; the Swin is MegaDescriptor's family at a CPU-test size
    "test_resnet": ["model.backbone=test_resnet"],
    "test_vit": ["model.backbone=test_vit"],
    "swin (tiny test size)": ["model.backbone=swin_tiny_patch4_window7_224",
                              "model.backbone_args={embed_dim: 16, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1]}"],
}


def backbones(model_name: str, repeats: int = 5) -> None:
    """Seconds per training step (forward, loss, backward, optimiser; batch P x K) and per embed batch
    (flip TTA) for a CNN, a ViT and a Swin, each at its own input size, median of `repeats`."""
    import torch

    from pipeline.config import load_stage_config
    from pipeline.losses import build_loss
    from pipeline.models import build_model
    from pipeline.models.embedding import embed_rows

    rng = np.random.default_rng(0)
    for name, sets in BACKBONES.items():
        cfg = load_stage_config(CONFIGS, model_name, sets)
        h, w = cfg["preprocess"]["image_size"]
        batch = cfg["sampler"]["classes_per_batch"] * cfg["sampler"]["photos_per_class"]
        torch.manual_seed(0)
        model = build_model(cfg, (h, w))
        labels = torch.from_numpy(np.repeat(np.arange(batch // 4), 4))
        loss = build_loss(cfg, batch // 4, model.embedding_dim)
        opt = torch.optim.AdamW(list(model.parameters()) + list(loss.parameters()), lr=1e-4)
        x = torch.from_numpy(rng.integers(0, 256, size=(batch, 3, h, w), dtype=np.uint8))
        images = rng.integers(0, 256, size=(int(cfg["embed"]["batch_size"]), h, w, 3), dtype=np.uint8)

        def step() -> float:
            started = time.perf_counter()
            opt.zero_grad()
            value = loss(model(x), labels)
            value.backward()
            opt.step()
            return time.perf_counter() - started

        def embed() -> float:
            started = time.perf_counter()
            embed_rows(model, images, np.arange(len(images)), len(images), True, torch.device("cpu"))
            return time.perf_counter() - started

        model.train()
        step()
        steps = [step() for _ in range(repeats)]
        embed()
        embeds = [embed() for _ in range(repeats)]
        size = model.spec["input_size"] or [h, w]
        report(f"{name}: seconds per training step", round(float(np.median(steps)), 3), "report", None,
               f"(batch {batch}, input {size[0]}x{size[1]}, {sum(p.numel() for p in model.parameters()):,} "
               f"parameters, pool {model.spec['pool']})")
        report(f"{name}: seconds per embed batch", round(float(np.median(embeds)), 3), "report", None,
               f"(batch {len(images)} with flip TTA)")


# ------------------------------------------------------------------------------------------------ knn

def clustered(ids: np.ndarray, dim: int, noise: float, rng, centres: dict | None = None) -> tuple[np.ndarray, dict]:
    """One unit vector per photo: its whale's random centre plus noise."""
    centres = {} if centres is None else centres
    for whale in pd.unique(ids):
        if whale not in centres:
            centres[whale] = rng.normal(size=dim).astype(np.float32)
    x = np.stack([centres[w] for w in ids]) / np.sqrt(dim)
    x += noise * rng.normal(size=x.shape).astype(np.float32) / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centres


def knn(n_gallery: int = 25000, n_queries: int = 8000, dim: int = 512, neighbours: int = 200,
        loop_queries: int = 500) -> None:
    import faiss

    from pipeline import columns as C
    from pipeline.config import DEFAULTS
    from pipeline.decision.policy import NewWhalePolicy
    from pipeline.retrieval.retriever import Gallery, Retriever

    rng = np.random.default_rng(0)
    ids = humpback_labels(n_gallery).astype(object)
    # Each new_whale photo is an individual of its own (seen once).
    ids = np.where(ids == C.NEW_WHALE, [f"nw_{i}" for i in range(len(ids))], ids)
    gallery, centres = clustered(ids, dim, 0.9, rng)
    known = rng.random(n_queries) < 0.72  # the rest are whales never seen (truth new_whale)
    query_ids = np.where(known, rng.choice(ids, n_queries), [f"unseen_{i}" for i in range(n_queries)])
    queries, _ = clustered(query_ids, dim, 0.9, rng, centres)
    truth = np.where(known, query_ids, C.NEW_WHALE)
    names = np.array([f"q{i}" for i in range(n_queries)])
    queries_table = pd.DataFrame({C.IMAGE: names, C.TRUTH: truth})
    retriever = Retriever({**DEFAULTS["knn"], "neighbours": neighbours, "keep_top": 5})

    def stage():
        """What the knn stage does: the retriever's per-whale scores, the policy fitted and applied."""
        scores = retriever.search(Gallery(gallery, ids, ids), queries, names).scores
        policy = NewWhalePolicy().fit(scores, queries_table)
        return policy.labels(scores, names, []), policy.fitted["map5_in_sample"]

    def raw():
        index = faiss.IndexFlatIP(dim)
        index.add(gallery)
        index.search(queries, neighbours)

    def loop(n):
        """The straightforward version: per query, a dot product, a sort, a dict of best score per whale."""
        out = []
        for q in queries[:n]:
            sims = gallery @ q
            order = np.argsort(-sims)[:neighbours]
            best: dict = {}
            for i in order:
                best.setdefault(ids[i], sims[i])
            out.append(list(best)[:5])
        return out

    times = {"stage": [], "raw": []}
    for _ in range(3):  # interleaved; the medians are compared
        started = time.perf_counter()
        raw()
        times["raw"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _, map5 = stage()
        times["stage"].append(time.perf_counter() - started)
    stage_s, raw_s = np.median(times["stage"]), np.median(times["raw"])
    started = time.perf_counter()
    loop(loop_queries)
    loop_s = (time.perf_counter() - started) * n_queries / loop_queries
    report("knn stage time / raw faiss flat search", round(stage_s / raw_s, 3), "<= 1.3", stage_s / raw_s <= 1.3,
           f"({stage_s:.2f} s vs {raw_s:.2f} s; {n_queries} x {n_gallery} x {dim}, {neighbours} neighbours, "
           f"{len(pd.unique(ids))} whales; MAP@5 on the synthetic queries {map5:.3f})")
    report("knn stage speed-up over a per-query Python loop", round(loop_s / stage_s, 1), "(report)", None,
           f"(loop {loop_s:.1f} s, extrapolated from {loop_queries} queries)")


# ------------------------------------------------------------------------------------------------ ivf

def ivf(n_gallery: int = 1_000_000, n_queries: int = 1000, dim: int = 512, nlist: int = 1024, nprobe: int = 16) -> None:
    import faiss

    from pipeline.retrieval.index import build_index

    rng = np.random.default_rng(0)
    n_centres = 50_000
    centres = rng.normal(size=(n_centres, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = np.empty((n_gallery, dim), dtype=np.float32)
    for start in range(0, n_gallery, 100_000):  # in chunks: the noise alone would be another 2 GB
        part = centres[rng.integers(0, n_centres, size=min(100_000, n_gallery - start))]
        part = part + 0.5 * rng.normal(size=part.shape).astype(np.float32) / np.sqrt(dim)
        gallery[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    queries = gallery[rng.choice(n_gallery, n_queries, replace=False)] + \
        0.3 * rng.normal(size=(n_queries, dim)).astype(np.float32) / np.sqrt(dim)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    flat = faiss.IndexFlatIP(dim)
    flat.add(gallery)
    started = time.perf_counter()
    _, exact = flat.search(queries, 5)
    flat_s = time.perf_counter() - started
    del flat
    started = time.perf_counter()
    index = build_index(gallery, "ivf", nlist=nlist, nprobe=nprobe)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    _, approx = index.search(queries, 5)
    ivf_s = time.perf_counter() - started
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact)])
    report(f"IVF recall of the exact top five at {n_gallery:,} x {dim}", round(float(recall), 4), "(report)", None,
           f"(nlist {nlist}, nprobe {nprobe}, {n_queries} queries)")
    report(f"IVF search speed-up over flat at {n_gallery:,} x {dim}", round(flat_s / ivf_s, 1), "(report)", None,
           f"(flat {flat_s:.2f} s, IVF {ivf_s:.3f} s for {n_queries} queries; IVF build {build_s:.1f} s once)")


# ---------------------------------------------------------------------------------------------- scale

def _write_photo(job):
    path, seed, size = job
    from PIL import Image

    rng = np.random.default_rng(seed)
    # Smooth colour fields with a dark blob: cheap to make, and JPEG-realistic in size and decode cost.
    base = rng.integers(0, 256, size=(7, 10, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.BICUBIC)
    blob = Image.new("RGB", (size[0] // 3, size[1] // 5), tuple(int(v) for v in rng.integers(0, 60, 3)))
    img.paste(blob, (int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))))
    img.save(path, quality=85)


def make_kaggle_sized(root: Path, n_test: int = 7960, size=(1050, 700), n_train: int | None = None) -> None:
    ids = humpback_labels(n_train)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    train = pd.DataFrame({"Image": [f"{i:08x}.jpg" for i in range(len(ids))], "Id": ids})
    test = [f"t{i:07x}.jpg" for i in range(n_test)]
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": test, "Id": "new_whale"}).to_csv(root / "sample_submission.csv", index=False)
    jobs = [(root / "train" / n, i, size) for i, n in enumerate(train["Image"])] + \
           [(root / "test" / n, 10**6 + i, size) for i, n in enumerate(test)]
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_photo, jobs, chunksize=64):
            pass


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def scale(n_train: int | None = None, n_test: int = 7960) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp) / "data"
        started = time.perf_counter()
        make_kaggle_sized(root, n_test, n_train=n_train)
        made_s = time.perf_counter() - started
        command = [sys.executable, "-m", "pipeline", "preprocess", "--data", str(root), "--work", str(Path(tmp) / "work"),
                   "--configs", str(CONFIGS)]
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"preprocess failed: {proc.stderr.read()[-2000:]}")
        n = sum(1 for _ in (root / "train").iterdir()) + sum(1 for _ in (root / "test").iterdir())
        report("preprocess wall time, Kaggle-sized set", round(seconds / 60, 2), "<= 10 min", seconds <= 600,
               f"({n} photos of 1050x700, {n / seconds:.0f} photos/s; making them took {made_s / 60:.1f} min)")
        report("preprocess peak memory (process tree RSS)", round(peak / 2**30, 2), "<= 4 GiB", peak <= 4 * 2**30)


# ----------------------------------------------------------------------------------------------- crop

def crop(model: str, budget: float = 0.75, n_folds: int = 3) -> None:
    """The default recipe on nyala with and without the automatic crop, same budget, side by side."""
    import json

    from pipeline.chain import run_chain
    from pipeline.io.submission import read_submission, score_submission

    data = REPO.parent / "shared" / "data" / "nyala"
    if not (data / "train.csv").is_file():
        print(f"skip crop: {data} not present")
        return
    solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
    scores = {}
    for auto in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-crop-") as tmp:
            sub = run_chain(data, tmp, model, CONFIGS, [f"folds.n_folds={n_folds}", f"preprocess.auto_crop={auto}"],
                            budget=budget)
            cv = json.loads((Path(tmp) / "reports" / "cv.json").read_text())["map5"]
            cropped = json.loads((Path(tmp) / "cache" / "preprocess.json").read_text())["cropped_automatically"]
            scores[auto] = (cv, score_submission(read_submission(sub), solution), cropped)
    (cv0, t0, _), (cv1, t1, n1) = scores[False], scores[True]
    # CV decides preprocess.auto_crop; the solution.csv figure is for the record only.
    report("nyala CV MAP@5 with automatic crop - without", round(cv1 - cv0, 4), "(CV decides preprocess.auto_crop)",
           None, f"(CV {cv1:.4f} vs {cv0:.4f}; against solution.csv {t1:.4f} vs {t0:.4f}; {n1} photos cropped; {model}, "
           f"{budget} min x {n_folds} folds)")


PARTS = {"datapath": datapath, "loader": loader, "backbones": backbones, "knn": knn, "ivf": ivf, "scale": scale, "crop": crop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--model", default=None, help="recipe for the data-path figures (default: the default recipe)")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for part in args.parts:
        if part in ("datapath", "loader", "backbones", "crop"):
            from pipeline.config import DEFAULT_MODEL

            PARTS[part](args.model or DEFAULT_MODEL)
        else:
            PARTS[part]()
    print()
    print(pd.DataFrame(RESULTS).to_string(index=False))


if __name__ == "__main__":
    main()
