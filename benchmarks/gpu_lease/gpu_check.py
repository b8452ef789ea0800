"""pinfeed's GPU path on a lent GPU machine, without Feast (run from the repo root).

    python3 .gpu/gpu_check.py --inputs .gpu/inputs --out "$OUT" [--budget-s 300] [--parts ort,ray]

(a) Ray Train, 1 worker, `use_gpu=True` then `use_gpu=False`, through the project's own
    functions: ranking = `training.ranking.job._train_one("multi_task", ...)` (what
    `train_ranking` calls per model: `training.ray_train.fit` + `train_loop_per_worker`);
    retrieval = `training.ray_train.fit(retrieval_loop, ...)` on `retrieval_inputs` (what
    `train_retrieval` builds), stopping before `export_and_index` (faiss).
    Optional last part (`--parts ...,full`): the whole `train_ranking` job (both models, ONNX
    export, parity check) on the GPU (CPU where there is none), when the budget allows.
(b) ranker.onnx and query_tower.onnx: ONNX Runtime CUDA EP vs CPU EP vs torch eager
    (cpu, cuda), p50/p99 per batch size, max |diff| vs torch cpu.

Feast: `training.training_sets` imports `feast` and `feature_repo.store` at import time (for the
set builders only); `training.ranking.job` imports it for `read_training_set_meta` and the
RANKING_NAME constant. Where feast is missing, `stub_feast()` puts two empty stand-in modules in
sys.modules for that one import (driver only: Ray workers import `training.ranking.ray_loop`,
which never touches it). faiss: `training.retrieval.config` -> `pinfeed.artifacts.index` imports
faiss at import time; .gpu/shim/faiss stands in (run_gpu.sh adds it to PYTHONPATH when needed).

Each part runs in try/except; results are written to <out>/gpu_results.json after every part.
CUDA parts are skipped cleanly where torch sees no GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

T0 = time.perf_counter()
RESULTS: dict[str, Any] = {"meta": {}, "parts": {}}
ARGS: argparse.Namespace
OUT: Path


def elapsed() -> float:
    return time.perf_counter() - T0


def save() -> None:
    RESULTS["meta"]["elapsed_s"] = round(elapsed(), 1)
    (OUT / "gpu_results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def run_part(name: str, fn, need_s: float = 0.0) -> Any:
    """Run `fn` (-> dict) as part `name`, unless less than `need_s` of the budget is left."""
    left = ARGS.budget_s - elapsed()
    if left < need_s:
        RESULTS["parts"][name] = {
            "status": "skipped",
            "why": f"budget: {left:.0f}s left < {need_s:.0f}s",
        }
        print(f"--- {name}: skipped ({left:.0f}s left)", flush=True)
        save()
        return None
    print(f"--- {name} (t={elapsed():.0f}s)", flush=True)
    began = time.perf_counter()
    try:
        result = fn()
        entry = {"status": "ok", **(result or {})}
    except Exception as error:  # one part failing must not lose the others' figures
        traceback.print_exc()
        entry = {
            "status": "error",
            "error": f"{type(error).__name__}: {error}"[:3000],
            "traceback": traceback.format_exc()[-5000:],
        }
        result = None
    entry["part_seconds"] = round(time.perf_counter() - began, 2)
    RESULTS["parts"][name] = entry
    print(f"--- {name}: {entry['status']} in {entry['part_seconds']}s", flush=True)
    save()
    return result


# ---------------------------------------------------------------- environment


def cuda_ok() -> bool:
    import torch

    return torch.cuda.is_available()


def meta() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
    }
    import numpy
    import pandas
    import pyarrow
    import torch

    info.update(
        numpy=numpy.__version__,
        pandas=pandas.__version__,
        pyarrow=pyarrow.__version__,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        torch_threads=torch.get_num_threads(),
    )
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("pydantic", "ray", "onnxruntime", "onnx", "faiss"):
        try:
            module = __import__(name)
            info[name] = getattr(
                module, "__version__", "stub" if getattr(module, "STUB", 0) else "?"
            )
            info[f"{name}_file"] = getattr(module, "__file__", None)
        except Exception as error:
            info[name] = f"import failed: {type(error).__name__}: {error}"
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        info["ort_available_providers"] = ort.get_available_providers()
        info["ort_device"] = ort.get_device()
    with contextlib.suppress(Exception):
        import feast  # noqa: F401

        info["feast"] = "present"
    info.setdefault("feast", "absent")
    RESULTS["meta"].update(info)
    return {}


def stub_feast() -> str:
    """Make `training.training_sets` importable without Feast (see the module docstring)."""
    try:
        import feast

        return "real feast"
    except ImportError:
        pass
    feast = types.ModuleType("feast")
    feast.FeatureStore = type("FeatureStore", (), {})  # only a type annotation there
    store = types.ModuleType("feature_repo.store")

    def _no_feast(*_: object, **__: object) -> None:
        raise RuntimeError("feast stub: building training sets needs Feast")

    store.feature_service = _no_feast
    store.service_feature_names = _no_feast
    sys.modules["feast"], sys.modules["feature_repo.store"] = feast, store
    try:
        import training.training_sets  # noqa: F401  (binds the stand-ins once)
    finally:
        del sys.modules["feast"], sys.modules["feature_repo.store"]
    return "stubbed for training.training_sets"


def home_copy() -> Any:
    """A writable copy of the carried project home (data/ only; artifacts go under it)."""
    from pinfeed.home import ProjectHome

    target = Path(ARGS.scratch) / "home"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(ARGS.inputs) / "home", target)
    return ProjectHome(target.resolve())


# ---------------------------------------------------------------- (b) inference


def _time_calls(call, warmup: int, max_iters: int, max_s: float) -> dict[str, float]:
    import numpy as np

    for _ in range(warmup):
        call()
    times: list[float] = []
    stop = time.perf_counter() + max_s
    while len(times) < max_iters and (len(times) < 10 or time.perf_counter() < stop):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "calls": len(times),
    }


def _cuda_session(path: Path):
    import onnxruntime as ort

    from pinfeed.artifacts.onnx import CPU, CUDA, session_options

    with contextlib.suppress(Exception):
        ort.preload_dlls()  # CUDA/cuDNN libs of the nvidia-* pip packages (torch's too)
    session = ort.InferenceSession(str(path), sess_options=session_options(), providers=[CUDA, CPU])
    providers = session.get_providers()
    if providers[0] != CUDA:
        raise RuntimeError(f"CUDAExecutionProvider did not start; session providers {providers}")
    return session


def bench_model(
    label: str, onnx_path: Path, module: Any, feeds_for: Any, output: str
) -> dict[str, Any]:
    """ORT CPU/CUDA and torch eager CPU/CUDA on `module` at each batch size; max |diff|."""
    import numpy as np
    import torch

    from pinfeed.artifacts.onnx import inference_session

    gpu = cuda_ok()
    sessions = {"ort_cpu": inference_session(onnx_path, prefer_gpu=False)}
    info: dict[str, Any] = {"model": str(onnx_path), "rows": []}
    info["project_session_providers"] = inference_session(onnx_path).get_providers()
    if gpu:
        try:
            project = inference_session(onnx_path)
            if project.get_providers()[0] == "CUDAExecutionProvider":
                sessions["ort_cuda_fp32_project"] = project
            info["project_provider_options"] = {
                k: {o: v for o, v in opts.items() if "tf32" in o}
                for k, opts in project.get_provider_options().items()
            }
        except Exception as error:
            info["ort_cuda_project_error"] = f"{type(error).__name__}: {error}"[:1500]
            print(
                f"{label}: project CUDA session failed: {info['ort_cuda_project_error']}",
                flush=True,
            )
        try:
            sessions["ort_cuda"] = _cuda_session(onnx_path)
        except Exception as error:
            info["ort_cuda_error"] = f"{type(error).__name__}: {error}"[:1500]
            print(f"{label}: ORT CUDA failed: {info['ort_cuda_error']}", flush=True)
    cpu_model = module.cpu().eval()
    cuda_model = None
    if gpu:
        import copy

        cuda_model = copy.deepcopy(cpu_model).to("cuda").eval()

    def torch_call(model, device, feeds):
        with torch.inference_mode():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in feeds.values()]
            return model(*tensors).cpu().numpy()

    for batch in ARGS.batch_sizes:
        feeds = feeds_for(batch)
        reference = torch_call(cpu_model, "cpu", feeds)
        engines: dict[str, Any] = {
            name: (lambda s=session, f=feeds: s.run([output], f)[0])
            for name, session in sessions.items()
        }
        engines["torch_cpu"] = lambda f=feeds: torch_call(cpu_model, "cpu", f)
        if cuda_model is not None:
            engines["torch_cuda"] = lambda f=feeds: torch_call(cuda_model, "cuda", f)
        for name, call in engines.items():
            try:
                diff = float(np.max(np.abs(call() - reference)))
                timing = _time_calls(call, ARGS.warmup, ARGS.iters, ARGS.max_call_s)
                row = {"engine": name, "batch": batch, "max_abs_diff_vs_torch_cpu": diff, **timing}
                row["rows_per_s"] = round(batch / (timing["mean_ms"] / 1e3))
            except Exception as error:
                row = {
                    "engine": name,
                    "batch": batch,
                    "error": f"{type(error).__name__}: {error}"[:800],
                }
            info["rows"].append(row)
            print(f"{label} {json.dumps(row)}", flush=True)
    return info


def ort_ranker() -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import torch

    from pinfeed.artifacts.ranker import read_ranker_manifest
    from training.ranking.export import manifest_model_config
    from training.ranking.features import ranker_arrays
    from training.ranking.model import MultiTaskRanker

    ranking = Path(ARGS.inputs) / "run" / "ranking"
    manifest = read_ranker_manifest(ranking)
    model = MultiTaskRanker(manifest_model_config(manifest))
    model.load_state_dict(
        torch.load(Path(ARGS.inputs) / "run" / "ranker_state.pt", weights_only=True)
    )
    frame = pd.read_parquet(Path(ARGS.inputs) / "home/data/training_sets/ranking.parquet")
    frame = frame.iloc[: max(ARGS.batch_sizes)]
    arrays = ranker_arrays(frame, manifest.embedding_dim)
    n = len(arrays)

    def feeds_for(batch: int) -> dict[str, np.ndarray]:
        rows = np.arange(batch) % n
        return arrays.take(rows).feed()

    return bench_model(
        "ranker", ranking / manifest.model_file, model, feeds_for, manifest.output_name
    )


def ort_query_tower() -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from pinfeed.artifacts.retrieval import QUERY_TOWER_INPUTS
    from training.retrieval.config import RetrievalConfig
    from training.retrieval.export import example_query_inputs
    from training.retrieval.model import RetrievalModel

    retrieval = Path(ARGS.inputs) / "run" / "retrieval"
    state = torch.load(Path(ARGS.inputs) / "run" / "retrieval_state.pt", weights_only=False)
    config = RetrievalConfig.model_validate(state["config"])
    model = RetrievalModel(config)
    model.load_state_dict(state["model"])
    path = retrieval / "query_tower.onnx"
    output = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()[0].name
    )

    def feeds_for(batch: int) -> dict[str, np.ndarray]:
        torch.manual_seed(batch)
        tensors = example_query_inputs(config, batch)
        return {name: t.numpy() for name, t in zip(QUERY_TOWER_INPUTS, tensors, strict=True)}

    return bench_model("query_tower", path, model.query_tower, feeds_for, output)


# ---------------------------------------------------------------- (a) Ray Train


def start_ray() -> dict[str, Any]:
    import ray

    gpus = 1 if cuda_ok() else 0
    cpus = ARGS.ray_cpus or os.cpu_count()
    ray.init(
        address="local",  # always a fresh local instance, never one left by a killed run
        num_cpus=cpus,
        num_gpus=gpus,
        include_dashboard=False,
        object_store_memory=ARGS.object_store_mb * 2**20,
        log_to_driver=ARGS.ray_logs,
        logging_level="WARNING",
    )
    with contextlib.suppress(Exception):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
    return {"cluster_resources": ray.cluster_resources(), "ray": ray.__version__}


class DeviceProbe:
    """`on_epoch_end` hook of the retrieval loop: records, on the worker, where it trained."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, epoch: int, step: int) -> None:
        import ray.train.torch
        import torch

        device = ray.train.torch.get_device()
        info = {
            "epoch": epoch,
            "step": step,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        }
        if device.type == "cuda":
            info["cuda_max_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            info["gpu"] = torch.cuda.get_device_name(device)
        with open(self.path, "a") as f:
            f.write(json.dumps(info) + "\n")


def ray_options(use_gpu: bool) -> Any:
    from training.ray_options import RayOptions

    return RayOptions(
        num_workers=1,
        use_gpu=use_gpu,
        cpus_per_worker=ARGS.cpus_per_worker,
        max_failures=0,
        checkpoints_to_keep=max(ARGS.epochs, 1),
    )


def retrieval_fit(home: Any, use_gpu: bool) -> dict[str, Any]:
    """`train_retrieval` up to and including `fit` (its own `retrieval_inputs`), no export."""
    stub_feast()  # training.retrieval.job imports training.training_sets
    from training.ray_train import fit
    from training.retrieval.job import retrieval_inputs
    from training.retrieval.job_config import RetrievalJobConfig, RetrievalSettings
    from training.retrieval.ray_loop import RetrievalLoopConfig, retrieval_loop

    tag = "gpu" if use_gpu else "cpu"
    job = RetrievalJobConfig(model=RetrievalSettings(epochs=ARGS.epochs), ray=ray_options(use_gpu))
    inputs = retrieval_inputs(job, home)
    model_config = inputs.model_config
    storage = Path(ARGS.scratch) / "checkpoints"
    settings = job.ray.settings(f"gpucheck-retrieval-{tag}-{time.time_ns()}", storage)
    dataset = inputs.dataset()
    probe = str(Path(ARGS.scratch) / f"probe-retrieval-{tag}.jsonl")
    Path(probe).unlink(missing_ok=True)
    loop = RetrievalLoopConfig(model_config, inputs.log_q, on_epoch_end=DeviceProbe(probe))
    began = time.perf_counter()
    result = fit(retrieval_loop, loop.as_loop_config(), {"train": dataset}, settings)
    wall = time.perf_counter() - began
    epochs = [m for _, m in (result.best_checkpoints or [])] or [result.metrics]
    probes = (
        [json.loads(line) for line in Path(probe).read_text().splitlines()]
        if Path(probe).exists()
        else []
    )
    last = result.metrics or {}
    return {
        "use_gpu": use_gpu,
        "fit_wall_s": round(wall, 2),
        "rows_per_epoch": last.get("rows"),
        "last_epoch_examples_per_s": last.get("examples_per_s"),
        "last_epoch_s": last.get("epoch_seconds"),
        "last_loss": last.get("loss"),
        "epochs": epochs,
        "worker": probes,
        "batch_size": model_config.batch_size,
        "cpus_per_worker": ARGS.cpus_per_worker,
    }


RANKING_STATE: dict[str, Any] = {}


def ranking_inputs(home: Any) -> dict[str, Any]:
    """What `train_ranking` builds before its fits (its own helpers, in its order); the
    materialised Ray dataset is shared by the GPU and CPU fits."""
    from datetime import UTC

    stub = stub_feast()
    from pinfeed.events import read_event_meta
    from training.ranking.config import RankerConfig, RankingJobConfig, RankingTrainConfig
    from training.ranking.job import _training_rows
    from training.ranking.ray_loop import ranking_dataset
    from training.ranking.record import time_split
    from training.training_sets import RANKING_NAME, read_training_set_meta

    events = read_event_meta(home.events)
    path = home.training_sets / f"{RANKING_NAME}.parquet"
    meta = read_training_set_meta(path)
    base = RankingJobConfig(epochs=ARGS.epochs)
    split = time_split(events.end.astimezone(UTC), base.split)
    rows, num_topics = _training_rows(path, events.embedding_dim, split.train_end)
    ranker = RankerConfig(
        embedding_dim=events.embedding_dim, num_topics=num_topics, **base.model.model_dump()
    )
    train = RankingTrainConfig(
        model=ranker,
        loss=base.loss,
        negative_sample_rate=float(meta.negative_sample_rate or 1.0),
        learning_rate=base.learning_rate,
        weight_decay=base.weight_decay,
        batch_size=base.batch_size,
        epochs=base.epochs,
        seed=base.seed,
    )
    began = time.perf_counter()
    dataset = ranking_dataset(path, events.embedding_dim, end=split.train_end)
    RANKING_STATE.update(home=home, base=base, rows=rows, train=train, dataset=dataset)
    return {
        "feast": stub,
        "train_rows": int(rows["labels"].shape[0]),
        "materialize_s": round(time.perf_counter() - began, 2),
        "batch_size": train.batch_size,
    }


def ranking_fit(use_gpu: bool) -> dict[str, Any]:
    from pinfeed.artifacts.layout import RunLayout, new_run_id
    from training.ranking.job import _train_one

    state = RANKING_STATE
    job = state["base"].model_copy(update={"ray": ray_options(use_gpu)})
    # a run of its own per fit: _train_one names the Ray run after the artifacts run, and a
    # second fit under the same name and storage would resume from the first one's checkpoints
    run = RunLayout.of(state["home"].artifacts, new_run_id()).create()
    began = time.perf_counter()
    _model, run_info = _train_one(
        "multi_task", state["train"], job, state["rows"]["dense"], state["dataset"], run
    )
    wall = time.perf_counter() - began
    return {
        "use_gpu": use_gpu,
        "fit_wall_s": round(wall, 2),
        "rows_per_epoch": int(state["rows"]["labels"].shape[0]),
        "last_epoch_examples_per_s": run_info.examples_per_s,
        "last_loss": run_info.loss,
        "epochs_run": run_info.epochs,
        "cpus_per_worker": ARGS.cpus_per_worker,
    }


def ranking_full_job(home: Any, use_gpu: bool) -> dict[str, Any]:
    """The whole `train_ranking` job (both models on Ray Train, ONNX export, parity gap)."""
    from pinfeed.artifacts.layout import new_run_id
    from training.ranking.job import train_ranking

    stub_feast()
    job = RANKING_STATE["base"].model_copy(
        update={"ray": ray_options(use_gpu), "run_id": new_run_id()}
    )
    began = time.perf_counter()
    out = train_ranking(job, home)
    record = json.loads((out / "training_run.json").read_text())
    return {
        "use_gpu": use_gpu,
        "wall_s": round(time.perf_counter() - began, 2),
        "out": str(out),
        "onnx_parity_gap": record.get("onnx_parity_gap"),
        "models": record.get("models"),
    }


# ---------------------------------------------------------------- report


def table() -> str:
    lines = ["", "== Ray Train (1 worker) =="]
    lines.append(f"{'part':28} {'status':8} {'ex/s last epoch':>16} {'fit wall s':>10} {'loss':>8}")
    for name, part in RESULTS["parts"].items():
        if not name.startswith(("ranking_", "retrieval_")):
            continue
        eps = part.get("last_epoch_examples_per_s")
        wall = part.get("fit_wall_s", part.get("wall_s"))
        loss = part.get("last_loss")
        eps_s = "" if eps is None else f"{eps:,.0f}"
        wall_s = "" if wall is None else f"{wall:.1f}"
        loss_s = "" if loss is None else f"{loss:.4f}"
        lines.append(
            f"{name:28} {part['status']:8} {eps_s:>16} {wall_s:>10} {loss_s:>8}"
            + (
                f"  {part.get('error', part.get('why', ''))[:120]}"
                if part["status"] != "ok"
                else ""
            )
        )
    lines += ["", "== Inference: p50 / p99 ms, rows/s, max|diff| vs torch cpu =="]
    for name in ("ort_ranker", "ort_query_tower"):
        part = RESULTS["parts"].get(name, {})
        if part.get("status") != "ok":
            lines.append(
                f"{name}: {part.get('status')} {part.get('error', part.get('why', ''))[:200]}"
            )
            continue
        lines.append(
            f"{name}: project session providers {part.get('project_session_providers')}"
            + (
                f"; ORT CUDA error: {part['ort_cuda_error'][:200]}"
                if "ort_cuda_error" in part
                else ""
            )
        )
        for row in part["rows"]:
            if "error" in row:
                lines.append(f"  {row['engine']:10} B={row['batch']:<5} error {row['error'][:150]}")
            else:
                lines.append(
                    f"  {row['engine']:10} B={row['batch']:<5} {row['p50_ms']:9.3f} {row['p99_ms']:9.3f}"
                    f" {row['rows_per_s']:>11,} {row['max_abs_diff_vs_torch_cpu']:.2e}"
                )
    return "\n".join(lines)


def main() -> None:
    global ARGS, OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default=".gpu/inputs")
    parser.add_argument("--out", default=os.environ.get("OUT") or "/tmp/gpu_check_out")
    parser.add_argument("--scratch", default="/tmp/gpu_check")
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip parts past this")
    parser.add_argument("--parts", default="ort,ray", help="comma list: ort, ray, full")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=None)
    parser.add_argument("--ray-cpus", type=int, default=None)
    parser.add_argument("--object-store-mb", type=int, default=512)
    parser.add_argument("--ray-logs", action="store_true", help="log_to_driver=True")
    parser.add_argument("--batch-sizes", default="1,64,500,4096")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--max-call-s", type=float, default=1.0, help="time cap per engine x batch")
    parser.add_argument(
        "--fit-need-s", type=float, default=45.0, help="min budget left to start a fit"
    )
    ARGS = parser.parse_args()
    ARGS.batch_sizes = [int(b) for b in ARGS.batch_sizes.split(",")]
    cpus = os.cpu_count() or 2
    if ARGS.cpus_per_worker is None:
        ARGS.cpus_per_worker = float(max(1, cpus // 2))
    parts = set(ARGS.parts.split(","))
    OUT = Path(ARGS.out)
    OUT.mkdir(parents=True, exist_ok=True)
    Path(ARGS.scratch).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(Path(ARGS.scratch) / "checkpoints", ignore_errors=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    RESULTS["meta"]["args"] = vars(ARGS)

    run_part("meta", meta)
    gpu = bool(RESULTS["meta"].get("cuda_available"))
    if "ort" in parts:
        run_part("ort_ranker", ort_ranker, need_s=20)
        run_part("ort_query_tower", ort_query_tower, need_s=20)
    if "ray" in parts or "full" in parts:
        home = home_copy()
        ready = run_part("ray_init", start_ray, need_s=60)
        if ready is not None:
            if run_part("ranking_inputs", lambda: ranking_inputs(home), need_s=60) is not None:
                if gpu and "ray" in parts:
                    run_part("ranking_gpu", lambda: ranking_fit(True), need_s=ARGS.fit_need_s)
                if "ray" in parts:
                    run_part("ranking_cpu", lambda: ranking_fit(False), need_s=ARGS.fit_need_s)
            if "ray" in parts:
                if gpu:
                    run_part(
                        "retrieval_gpu", lambda: retrieval_fit(home, True), need_s=ARGS.fit_need_s
                    )
                run_part(
                    "retrieval_cpu", lambda: retrieval_fit(home, False), need_s=ARGS.fit_need_s
                )
            if "full" in parts and "ranking_inputs" in RESULTS["parts"]:
                tag = "gpu" if gpu else "cpu"
                fit_s = RESULTS["parts"].get(f"ranking_{tag}", {}).get("fit_wall_s", 60)
                run_part(
                    f"ranking_full_job_{tag}",
                    lambda: ranking_full_job(home, gpu),
                    need_s=2 * fit_s + 30,
                )
            with contextlib.suppress(Exception):
                import ray

                ray.shutdown()
    if not gpu:
        RESULTS["meta"]["note"] = "no CUDA device: CUDA engines and use_gpu=True fits skipped"
    save()
    print(table(), flush=True)
    print(f"\nresults: {OUT / 'gpu_results.json'} (t={elapsed():.0f}s)", flush=True)


if __name__ == "__main__":
    main()
