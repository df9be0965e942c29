"""Humpback whale identification: a staged Kaggle-style deep metric learning pipeline."""
__version__ = "0.1.0"
