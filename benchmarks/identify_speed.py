"""Identify per photo, this tree against a baseline commit, same work folder and photos:

    python -m benchmarks.identify_speed --work WORK [--baseline 01c2586] [--photos 40] [--data DATA]

Each tree loads its Identifier once, then identifies the photos one at a time (as the web page
answers one upload per request); printed: load seconds, and the per-photo median and p95. The
baseline runs from a temporary git worktree with this virtual environment."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

TIMING = """
import json, sys, time
import numpy as np
from pipeline.identify import Identifier
work, model, photos = sys.argv[1], sys.argv[2], sys.argv[3:]
started = time.perf_counter()
identifier = Identifier(work, [model])
load = time.perf_counter() - started
seconds = []
for photo in photos:
    started = time.perf_counter()
    identifier.identify([identifier.load_photo(photo)], [photo])
    seconds.append(time.perf_counter() - started)
print(json.dumps({"load": load, "seconds": seconds}))
"""


def timing(tree: Path, work: Path, model: str, photos: list[str]) -> dict:
    run = subprocess.run([sys.executable, "-c", TIMING, str(work), model, *photos], cwd=tree, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    if run.returncode != 0:
        raise RuntimeError(f"identify timing failed in {tree}:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    from pipeline.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "nyala"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--baseline", default="01c2586")
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()
    names = pd.read_csv(Path(args.data) / "sample_submission.csv")["Image"].tolist()[:args.photos]
    photos = [str(Path(args.data) / "test" / n) for n in names]
    rows = []
    with tempfile.TemporaryDirectory(prefix="identify-baseline-") as tmp:
        subprocess.run(["git", "worktree", "add", "--detach", tmp, args.baseline], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for label, tree in ((f"baseline {args.baseline}", Path(tmp)), ("this tree", REPO)):
                t = timing(tree, Path(args.work), args.model, photos)
                s = np.array(t["seconds"])
                rows.append({"tree": label, "load s": round(t["load"], 2), "per photo median s": round(float(np.median(s)), 3),
                             "p95 s": round(float(np.percentile(s, 95)), 3), "photos": len(s)})
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=REPO, capture_output=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
