"""Ensembles of several models: concatenated features with a softmax classifier, and score fusion."""
