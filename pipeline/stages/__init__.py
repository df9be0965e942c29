"""Thin entry points: each reads its config, calls the library and writes its outputs atomically."""
