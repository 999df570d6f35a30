"""Benchmarks, run by hand (``python -m benchmarks``); never timed assertions in tests."""
