"""The training loop, its hooks and device set-up."""
