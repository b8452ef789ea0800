"""Two-tower retrieval: towers, dual-positive loss, ONNX export and the pin index.

The modules stay importable apart: `session`, `manifest`, `config` and `index` need no torch
(serving imports them); `model`, `loss`, `weights`, `features`, `export` and `train_step` do.
"""
