"""The ranking model: a multi-task ranker (shared layers, heads closeup, save, click,
long_click), its single-head baseline, losses, configs, feature preparation and ONNX export.

Models return logits; sigmoid, calibration (`pinfeed.calibration`) and utility
(`pinfeed.utility`) are post-processing steps shared with serving.
"""
