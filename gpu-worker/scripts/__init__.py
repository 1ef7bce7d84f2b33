"""Operator and developer commands, run from gpu-worker/ as ``python -m scripts.<name>``."""
