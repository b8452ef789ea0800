"""ONNX Runtime sessions for the exported towers; torch-free, so serving can import it.

The CUDA provider is asked for only when ORT was built with it and the machine has an NVIDIA
device node: asking on a machine without one makes ORT log a loud (harmless) library-load
error before falling back. Where CUDA is asked for but cannot start (wrong CUDA or cuDNN
major), ORT itself falls back to the CPU provider; `session.get_providers()` says which won.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from pinfeed.errors import DataNotFoundError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def session_providers(prefer_gpu: bool = True) -> list[str]:
    """[CUDA, CPU] when a GPU is usable and wanted, else [CPU]."""
    has_gpu = Path("/dev/nvidiactl").exists() and CUDA in ort.get_available_providers()
    return [CUDA, CPU] if prefer_gpu and has_gpu else [CPU]


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Graph optimisation ALL; `intra_op_threads` pins the thread pool (None: ORT's default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    return options


def inference_session(
    path: str | Path, intra_op_threads: int | None = None, prefer_gpu: bool = True
) -> ort.InferenceSession:
    """Open one exported tower for inference (see the module docstring for the provider choice)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no ONNX model here; run `pinfeed export` first")
    return ort.InferenceSession(
        str(path),
        sess_options=session_options(intra_op_threads),
        providers=session_providers(prefer_gpu),
    )
