"""Data: preprocessing into a cache, folds, synthetic data, datasets, samplers, transforms."""
