"""Offline evaluation: per-head metrics, calibration analysis and plots, utility optimisation,
the closed-loop simulator and reports. Reads training sets and artifacts; contains no training
code."""
