"""Moved to pipeline/decision/policy.py (issue #33). This name stays only for benchmarks/ (ensemble.py,
speed.py), which import it and are edited on another branch; remove it once they import
pipeline.decision.policy."""
from pipeline.decision.policy import NewWhalePolicy  # noqa: F401
