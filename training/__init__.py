"""Training: datasets, models, losses, Ray Train loops, ONNX export and the ANN index build."""
