"""Wrap torch.distributed's collectives so that each checks the device of its tensors against the
device the backend requires (NCCL: the rank's GPU; gloo: the CPU), independently of the pipeline's
own idea of it.

As a launcher (`torchrun ... -m tests.collective_check train ...`) it runs `whale` with the checks on
and, at exit, prints how many collectives of each kind it checked. `require(device_of)` installs the
checks in-process, with any rule for the required device.

WHALE_TEST_FAST_CLOCK=<rank>:<factor> makes that rank's training clock run `factor` times fast (as if
its clock had started long before rank 0's): the ranks must still agree on the time budget's progress."""
from __future__ import annotations

import atexit
import os
import sys
from collections import Counter

import torch
import torch.distributed as dist

CHECKED = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter",
           "reduce_scatter_tensor", "all_to_all", "scatter", "gather")
counts: Counter = Counter()


class WrongDevice(AssertionError):
    pass


def backend_rule() -> torch.device:
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")


def _tensors(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def require(device_of, replace=None) -> dict:
    """Wrap every collective: its tensors must be on device_of(); `replace(name)` may give the call to
    make instead of the real one. Returns the originals (to restore)."""
    originals = {}
    for name in CHECKED:
        original = getattr(dist, name, None)
        if original is None:
            continue
        originals[name] = original

        def checked(*args, _name=name, _original=original, **kwargs):
            required = device_of()
            for t in _tensors(args, kwargs):
                if t.device != required:
                    raise WrongDevice(f"{_name} got a tensor on {t.device}; the backend requires {required}")
            counts[_name] += 1
            call = replace(_name) if replace is not None else None
            return (call or _original)(*args, **kwargs)

        setattr(dist, name, checked)
    return originals


def restore(originals: dict) -> None:
    for name, original in originals.items():
        setattr(dist, name, original)


def skew_clock() -> None:
    spec = os.environ.get("WHALE_TEST_FAST_CLOCK")
    if not spec or int(spec.split(":")[0]) != int(os.environ.get("RANK", "0")):
        return
    from pipeline.training import loop

    factor, real, start = float(spec.split(":")[1]), loop.clock, loop.clock()
    loop.clock = lambda: start + factor * (real() - start)


def main() -> int:
    require(backend_rule)
    skew_clock()
    atexit.register(lambda: print(f"collectives checked: {dict(sorted(counts.items()))}", file=sys.stderr))
    from pipeline.cli import main as whale

    return whale(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
