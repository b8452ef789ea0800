"""Speed measurements, run as modules (`python -m benchmarks.<name>`); never collected as tests."""
