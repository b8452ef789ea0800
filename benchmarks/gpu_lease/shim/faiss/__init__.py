"""Stand-in for faiss on the GPU machine, which does not have it (and the payload leaves it out).

`pinfeed.artifacts.index` does `import faiss` at import time, and `training.retrieval.config`
imports it for `IndexConfig` (plain pydantic), so every retrieval module, on the driver and on
each Ray worker, needs the name to import. Training never calls faiss; any use fails loudly.
run_gpu.sh puts this folder LAST on PYTHONPATH only when no real faiss imports.
"""

STUB = True


def __getattr__(name: str):
    raise AttributeError(f"faiss stub (.gpu/shim): faiss.{name} is not available on this machine")
