"""Moved to pipeline/decision/evaluation.py (issue #33). This name stays only for benchmarks/ensemble.py,
which imports it and is edited on another branch; remove it once it imports pipeline.decision.evaluation."""
from pipeline.decision.evaluation import best_member_bound, cross_validate  # noqa: F401
