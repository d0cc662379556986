"""Benchmark scripts (run as ``python -m benchmarks.<name>``); figures are recorded in README.md."""
