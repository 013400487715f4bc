"""Helpers the tests and the benchmarks share, written once."""
