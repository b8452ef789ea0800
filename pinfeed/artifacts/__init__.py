"""The artifacts contract: what a training run leaves on disk and how every other part reads it.

Training writes through this package, serving and evaluation read through it; nothing else
spells a file name, a manifest field or the "which run" rule. Torch-free (numpy, pydantic,
ONNX Runtime, faiss), so serving can import all of it.

- `layout`: the run folder, its file names, run ids and the run record (`run.json`).
- `runs`: which run a command means (`latest`, the run a ranking job joins), and a run's
  checked pair of manifests (`load_run`).
- `retrieval`: the two-tower manifest (`manifest.json`) and the towers' input names.
- `ranker`: the ranker manifest (`ranker.manifest.json`) and `RankerInputs`, its four inputs.
- `onnx`: the ONNX Runtime session every consumer opens.
- `index`: the pin index (faiss) as written by training and read by serving and evaluation.
"""
