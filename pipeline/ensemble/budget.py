"""How `make train-all BUDGET=B` spends B training minutes per fold across the ensemble's members, so that
an ensemble is compared with a single model of the same total minutes, not more: the members that train
the whole network (train.epochs != 0) share B equally; a head on frozen features (train.head_epochs)
and a training-free member (colour_histogram, the zero-shot recipes) take no budget, since their
minutes are fixed by their features, not by a clock."""
from __future__ import annotations

from pipeline.config import load_stage_config


def trains_network(cfg: dict) -> bool:
    return int(cfg["train"]["epochs"]) != 0


def member_budgets(names: list[str], total: float | None, configs, overrides=(), pipeline=None) -> dict[str, float | None]:
    """Minutes per fold for each member: total / (members that train the network) for those, None (no
    budget to give) for the rest and for every member when total is None."""
    trained = [n for n in names if trains_network(load_stage_config(configs, n, overrides, pipeline))]
    if total is None:
        return {n: None for n in names}
    share = float(total) / max(1, len(trained))
    return {n: share if n in trained else None for n in names}
