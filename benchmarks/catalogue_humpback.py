"""A catalogue of real humpback flukes, bound to the zero-shot bundle and to a trained one, side by side.

    python -m benchmarks.catalogue_humpback [--quick] [--work DIR] [--survey 500] [--limit N]

For each bundle (zero-shot: `whale catalogue init` without --work, the ImageNet network as it is;
trained: a work folder of the default recipe, trained here unless --work names one):

1. init from ../shared/data/humpback's train set (Kaggle layout): its identified photos are confirmed.
2. `whale catalogue evaluate`: the confirmed photos replayed in a seeded order, each queried against
   the catalogue as it stood before it, by fold networks that never trained on it (evaluate.py):
   rank-1/5/10 of returning individuals, the candidates a reviewer looks at to find 95% of the
   matches, P(new individual) AUC and reliability, printed as the command prints them.
3. Import speed: a survey folder as it comes off the cards (--survey test photos over two cards'
   folders, with sidecars, a RAW file, system files and one photo cut short) added in one call of
   `catalogue add`: photos per second, the matcher's load apart; what it skipped and refused.

Import speed is a timing: run it on an otherwise idle machine and say what else ran."""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.catalogue import trained_work
from benchmarks.humpback import humpback_set


def survey_folder(data: Path, out: Path, photos: int) -> tuple[Path, int]:
    """Test photos as two cards' folders hold them, with what cards also hold: a sidecar per tenth photo,
    a RAW file, system files, and one JPEG cut short by a full card. Returns the folder and the number
    of whole photos in it."""
    names = pd.read_csv(data / "sample_submission.csv", dtype=str)["Image"].tolist()[:photos]
    cards = [out / "card1" / "DCIM" / "100CANON", out / "card2" / "2019-07-14"]
    for card in cards:
        card.mkdir(parents=True)
    for i, name in enumerate(names):
        folder = cards[i % 2]
        shutil.copyfile(data / "test" / name, folder / name)
        if i % 10 == 0:
            (folder / f"{Path(name).stem}.xmp").write_text("<x:xmpmeta/>")
    (out / "card1" / ".DS_Store").write_bytes(b"\0" * 64)
    (out / "card2" / "Thumbs.db").write_bytes(b"\0" * 64)
    (cards[1] / "IMG_9999.CR2").write_bytes(b"II*\0" + b"\0" * 4096)
    whole = (data / "test" / names[0]).read_bytes()
    (cards[1] / "IMG_9998.JPG").write_bytes(whole[: len(whole) // 3])
    return out, len(names)


def measure(kind: str, data: Path, folder: Path, work: Path | None, models: list[str] | None, survey: Path,
            limit: int | None, evaluate_too: bool) -> dict:
    """Init (unless FOLDER holds the catalogue already), evaluate, then the survey added to a copy of it."""
    from pipeline.catalogue.catalogue import Catalogue
    from pipeline.catalogue.evaluate import evaluate, format_report

    init_s = None
    if not (folder / "catalogue.db").is_file():
        started = time.perf_counter()
        Catalogue.init(folder, data, work, models).close()
        init_s = time.perf_counter() - started
    row = {"bundle": kind}
    if evaluate_too:
        catalogue = Catalogue.open(folder)
        started = time.perf_counter()
        report = evaluate(catalogue, limit=limit)
        evaluate_s = time.perf_counter() - started
        catalogue.close()
        print(f"\n== whale catalogue evaluate, {kind} bundle ({evaluate_s / 60:.1f} min) ==\n{format_report(report)}",
              flush=True)
        row.update({"rank-1": round(report["rank1"], 4), "rank-5": round(report["rank5"], 4),
                    "rank-10": round(report["rank10"], 4), "for 95%": report["candidates_for_95pct"] or f"> kept ({report['found_in_kept']:.0%} found)",
                    "P(new) AUC": round(report["p_new_auc"], 4), "queries": report["queries"]})
    # The survey goes into a copy: the catalogue as initialised stays for the next run (--root).
    copy = folder.with_name(folder.name + "-survey")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy, symlinks=True)
    try:
        catalogue = Catalogue.open(copy)
        started = time.perf_counter()
        catalogue.matcher  # noqa: B018 (load: bundle, networks, galleries and their indexes)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        added = catalogue.add([survey])
        add_s = time.perf_counter() - started
        catalogue.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    stored = [a for a in added if a.hash and not a.refused and not a.skipped]
    row.update({"init min": round(init_s / 60, 1) if init_s is not None else "reused", "load s": round(load_s, 1),
                "survey photos": len(stored), "photos/s": round(len(stored) / add_s, 2),
                "skipped": sum(bool(a.skipped) for a in added), "refused": sum(bool(a.refused) for a in added)})
    return row


def main() -> None:
    from pipeline.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="humpback_small instead of humpback")
    parser.add_argument("--work", type=Path, default=None, help="a work folder trained on the same set (else trained here)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--budget", type=float, default=5.0, help="training minutes per fold when training here")
    parser.add_argument("--survey", type=int, default=500, help="test photos in the survey folder")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many queries")
    parser.add_argument("--no-evaluate", action="store_true", help="import speed only")
    parser.add_argument("--root", type=Path, default=None,
                        help="keep the catalogues here (a second run reuses them: import speed alone on an idle machine)")
    parser.add_argument("--bundles", nargs="+", default=["zero-shot", "trained"], choices=["zero-shot", "trained"])
    args = parser.parse_args()
    os.environ.setdefault("WHALE_PROGRESS", "off")
    data = humpback_set(args.quick)
    if data is None:
        return
    name = data.name
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-catalogue-humpback-") as tmp:
        root = args.root or Path(tmp)
        shutil.rmtree(root / "survey", ignore_errors=True)
        survey, photos = survey_folder(data, root / "survey", args.survey)
        for kind in args.bundles:
            work = None
            if kind == "trained":
                work = trained_work(data, args.work or root / "work", args.budget, args.model)
            rows.append(measure(kind, data, root / f"catalogue-{kind}", work, [args.model] if work else None, survey,
                                args.limit, not args.no_evaluate))
            print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print(f"\n== a catalogue of {name}'s train photos; a survey folder of {photos} test photos "
          f"(+ sidecars, RAW, system files, one cut short) ==")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nwall time {round((time.time() - started) / 60, 1)} min")


if __name__ == "__main__":
    main()
