"""Training: datasets, models, losses, Ray Train loops, ONNX export and the ANN index build."""

from pinfeed.feast_import import skip_feast_typechecks

skip_feast_typechecks()  # before any module here imports Feast: pinfeed/feast_import.py
