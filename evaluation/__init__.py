"""Offline evaluation: per-head metrics, calibration analysis and plots, utility optimisation,
the closed-loop simulator and reports. Reads training sets and artifacts; contains no training
code."""

from pinfeed.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any module here imports Feast: pinfeed/feast_import.py
