"""Everything decided from scores, apart from the search that made them (DESIGN.md, "The shape to grow
into"): the new_whale policy (policy.py) and its threshold arithmetic (threshold.py), P(new individual)
(calibration.py) and P(same individual) from a global score and a local count (fusion_calibration.py),
and out-of-fold evaluation with nested policies (evaluation.py). Nothing here imports retrieval/: a
decision reads score tables (Image, Id, score), whichever search or re-scorer made them."""
