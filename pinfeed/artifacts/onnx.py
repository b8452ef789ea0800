"""The one way pinfeed opens an exported model: an ONNX Runtime session tuned for small batches.

The CUDA provider is asked for only when ORT was built with it and the machine has an NVIDIA
device node: asking on a machine without one makes ORT log a loud (harmless) library-load error
before falling back. Where CUDA is asked for but cannot start (wrong CUDA or cuDNN major), ORT
itself falls back to the CPU provider; `session.get_providers()` says which won.

On CUDA, TF32 is off (`CUDA_OPTIONS`): ORT's CUDA provider runs float32 matrix products in
TF32 by default on Ampere and later, which moved the ranker's logits by up to 1.2e-3 from the
CPU's on an H200 (docs/benchmarks.md, GPU section), past the 1e-5 that the train/serve parity
checks hold served scores to. With it off they differ by float rounding only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from pinfeed.errors import DataNotFoundError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
NVIDIA_DEVICE = Path("/dev/nvidiactl")
CUDA_OPTIONS = {"use_tf32": "0"}  # full float32 products: the CPU's answers (module docstring)


def gpu_available(
    device_node: Path = NVIDIA_DEVICE, providers: Sequence[str] | None = None
) -> bool:
    """ORT has the CUDA provider (`providers`: ORT's own list) and the machine has an NVIDIA
    device (`device_node`); both are parameters so the rule is testable on either machine."""
    available = ort.get_available_providers() if providers is None else providers
    return device_node.exists() and CUDA in available


def session_providers(prefer_gpu: bool = True, gpu: bool | None = None) -> list[str]:
    """[CUDA, CPU] when a GPU is usable (`gpu`, default: `gpu_available()`) and wanted, else
    [CPU]."""
    usable = gpu_available() if gpu is None else gpu
    return [CUDA, CPU] if prefer_gpu and usable else [CPU]


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Full graph optimisation, sequential execution (one request's ops in order), one inter-op
    thread; `intra_op_threads` pins the op thread pool (None or 0: ORT's default, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return options


def inference_session(
    path: str | Path, intra_op_threads: int | None = None, prefer_gpu: bool = True
) -> ort.InferenceSession:
    """Open one exported model for inference (provider choice in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no ONNX model here; train the run that should hold it")
    providers = session_providers(prefer_gpu)
    return ort.InferenceSession(
        str(path),
        sess_options=session_options(intra_op_threads),
        providers=providers,
        provider_options=[dict(CUDA_OPTIONS) if name == CUDA else {} for name in providers],
    )
