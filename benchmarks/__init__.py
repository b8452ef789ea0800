"""Speed measurements, run as modules (`python -m benchmarks.<name>`); never collected as tests."""

from pinfeed.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any module here imports Feast: pinfeed/feast_import.py
