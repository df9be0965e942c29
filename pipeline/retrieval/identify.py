"""Moved to pipeline/identify.py (issue #33: identification above the bundle). This name stays only for
benchmarks/identify_speed.py, which imports it and is edited on another branch; remove it once it imports
pipeline.identify."""
from pipeline.identify import Identifier  # noqa: F401
