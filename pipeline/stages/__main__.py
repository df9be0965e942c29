"""`python -m pipeline.stages --list`: the stages in order, one a line (name, whether `make all` runs
it, help); what `make help` prints. Imports no stage module, so it runs before `make install`."""
from __future__ import annotations

import argparse

from pipeline.stages import ordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages", description=__doc__)
    parser.add_argument("--list", action="store_true", help="print the stages in order")
    parser.add_argument("--chain", action="store_true", help="only the stages `make all` runs, names only")
    args = parser.parse_args(argv)
    if args.chain:
        print("\n".join(s.name for s in ordered() if s.chain is not None))
        return 0
    width = max(len(s.name) for s in ordered())
    for s in ordered():
        print(f"  {s.name:<{width}}  {'*' if s.chain is not None else ' '} {s.help}")
    print("  (* run by `make all`, in this order)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
