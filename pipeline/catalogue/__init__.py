"""The biologist's catalogue of known individuals: storage, matching, decisions, exports, evaluation."""
