"""Decisions on retrieval scores: calibrated probabilities (P(new individual))."""
