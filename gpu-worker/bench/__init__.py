"""Benchmarks, run from gpu-worker/ as ``python -m bench.<name>``; results in bench/results/."""
