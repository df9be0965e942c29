"""The catalogue at work on nyala: a biologist's session simulated end to end.

    python -m benchmarks.catalogue [--work DIR] [--budget 1] [--pad 100000] [--padded-adds 40]

1. A work folder trained on ../shared/data/nyala (reused with --work, else trained here at --budget
   minutes per fold with the default recipe), and a catalogue initialised from its train set.
2. The 320 test photos are added one at a time, in sample_submission order; after each, a simulated
   reviewer decides it from solution.csv (a simulation of the person, never a default): the known
   individual when solution.csv names one, else a new individual. Measured: add latency per photo
   (median, p95), decision-plus-append latency, and the rank of the true individual among the
   candidates of each test photo whose individual is known, while the catalogue grows.
3. Append against rebuilding: the matcher's galleries rebuilt from the database (what every request
   did before) against one decision's append.
4. The same adds on a copy of the freshly initialised catalogue whose every gallery is padded to
   --pad photos with synthetic unit vectors (distinct fake individuals), so the cost of a large
   catalogue shows.
5. `whale catalogue evaluate` on the grown catalogue.

Goal on 2 CPU cores (one-model bundle with its fold models and local matching): add <= 1 s median at
nyala size and <= 1.5x that at 100,000 photos; decision plus append <= 0.2 s."""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import columns as C

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def trained_work(data: Path, work: Path, budget: float, model: str) -> Path:
    from pipeline.chain import run_chain

    if not (work / "predictions" / model / "threshold.json").is_file():
        run_chain(data, work, model, CONFIGS, [], budget=budget)
    return work


def session(catalogue, data: Path, limit: int | None = None, decide: bool = True) -> dict:
    """Adds the test photos one by one and decides each as solution.csv says; returns the timings and ranks."""
    solution = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False).set_index(C.IMAGE)[C.ID]
    order = pd.read_csv(data / "sample_submission.csv", dtype=str)[C.IMAGE].tolist()[:limit]
    add_s, decide_s, ranks, refused = [], [], [], 0
    for name in order:
        started = time.perf_counter()
        added = catalogue.add([data / "test" / name])[0]
        if added.refused:  # the same bytes as a photo already in the catalogue (test duplicates a train photo)
            refused += 1
            continue
        add_s.append(time.perf_counter() - started)
        truth = solution[name]
        if truth != C.NEW_WHALE:
            ids = [c["id"] for c in added.ranking.candidates]
            ranks.append(ids.index(truth) + 1 if truth in ids else None)
        if decide:
            started = time.perf_counter()
            if truth != C.NEW_WHALE:
                catalogue.decide(added.hash, "match", "simulated reviewer", truth)
            else:
                catalogue.decide(added.hash, "new", "simulated reviewer")
            decide_s.append(time.perf_counter() - started)
    found = np.array([np.inf if r is None else r for r in ranks], dtype=float)
    return {"photos": len(order) - refused, "refused": refused, "add_s": np.array(add_s), "decide_s": np.array(decide_s),
            "known": len(ranks), "rank1": float((found <= 1).mean()) if len(found) else float("nan"),
            "rank5": float((found <= 5).mean()) if len(found) else float("nan")}


def pad(catalogue, size: int, seed: int = 0) -> int:
    """Appends synthetic unit vectors (fake individuals of 4 photos each) to every gallery up to `size`."""
    rng = np.random.default_rng(seed)
    matcher = catalogue.matcher
    padded = 0
    for model in matcher.bundle.models:
        for fold, gallery in model.galleries.items():
            extra = size - len(gallery)
            if extra <= 0:
                continue
            vectors = rng.normal(size=(extra, gallery.vectors.shape[1])).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = np.array([f"pad_{i // 4}" for i in range(extra)], dtype=object)
            gallery.append(vectors, ids, np.array([f"pad_photo_{i}" for i in range(extra)], dtype=object))
            padded = len(gallery)
    return padded


def stats(seconds: np.ndarray) -> str:
    return f"{np.median(seconds):.3f} / {np.percentile(seconds, 95):.3f}" if len(seconds) else "-"


def main() -> None:
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.catalogue.evaluate import evaluate, format_report
    from pipeline.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None, help="a work folder trained on nyala (else one is trained here)")
    parser.add_argument("--budget", type=float, default=1.0, help="training minutes per fold when training here")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pad", type=int, default=100_000)
    parser.add_argument("--padded-adds", type=int, default=40)
    parser.add_argument("--no-evaluate", action="store_true")
    args = parser.parse_args()
    data = SHARED / "nyala"
    if not (data / "train.csv").is_file():
        print(f"skip: {data} not present")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-catalogue-"))
    try:
        started = time.time()
        work = trained_work(data, Path(args.work) if args.work else tmp / "work", args.budget, args.model)
        trained_s = time.time() - started
        started = time.perf_counter()
        Catalogue.init(tmp / "cat", data, work, [args.model]).close()
        init_s = time.perf_counter() - started
        shutil.copytree(tmp / "cat", tmp / "cat-padded")
        catalogue = Catalogue.open(tmp / "cat")
        started = time.perf_counter()
        catalogue.matcher  # noqa: B018 (load: bundle, networks, galleries and their indexes)
        load_s = time.perf_counter() - started
        grown = session(catalogue, data)
        started = time.perf_counter()
        catalogue.matcher.reload()
        rebuild_s = time.perf_counter() - started
        size = catalogue.matcher.gallery_size()

        padded_cat = Catalogue.open(tmp / "cat-padded")
        padded_size = pad(padded_cat, args.pad)
        padded = session(padded_cat, data, limit=args.padded_adds)

        median_add = float(np.median(grown["add_s"]))
        median_decide = float(np.median(grown["decide_s"]))
        rows = [
            ("gallery photos (per fold model)", f"{size}", f"{padded_size}", ""),
            ("add per photo, median / p95 (s)", stats(grown["add_s"]), stats(padded["add_s"]),
             f"<= 1 s median: {'met' if median_add <= 1 else 'not met'}; padded <= 1.5x: "
             f"{np.median(padded['add_s']) / median_add:.2f}x, "
             f"{'met' if np.median(padded['add_s']) <= 1.5 * median_add else 'not met'}"),
            ("decision + append, median / p95 (s)", stats(grown["decide_s"]), stats(padded["decide_s"]),
             f"<= 0.2 s: {'met' if median_decide <= 0.2 else 'not met'} (padded: "
             f"{'met' if np.median(padded['decide_s']) <= 0.2 else 'not met'})"),
            ("rebuilding every gallery from the database (s)", f"{rebuild_s:.3f}", "",
             f"append is {rebuild_s / median_decide:.0f}x faster than a rebuild"),
            ("rank-1 / rank-5 of known test individuals", f"{grown['rank1']:.4f} / {grown['rank5']:.4f} "
             f"({grown['known']} photos)", f"{padded['rank1']:.4f} / {padded['rank5']:.4f} ({padded['known']} photos)", ""),
            ("catalogue init / load (s)", f"{init_s:.1f} / {load_s:.1f}", "", f"work folder ready in {trained_s:.0f} s"),
        ]
        rows.append(("photos refused as already in the catalogue (same bytes)", f"{grown['refused']}",
                     f"{padded['refused']}", ""))
        table = pd.DataFrame(rows, columns=["measure", f"nyala ({grown['photos']} adds)",
                                            f"padded to {args.pad:,} ({padded['photos']} adds)", "goal"])
        print(table.to_string(index=False))
        if not args.no_evaluate:
            print("\nwhale catalogue evaluate (the grown catalogue):")
            print(format_report(evaluate(catalogue)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
