"""Checks of the machine a user runs on (make gpu-check)."""
