"""Benchmarks, each runnable from the repository root as `python -m bench.<name>`."""
