"""Copy what .gpu/gpu_check.py needs from a project home + its latest complete run."""

import json
import shutil
import sys
from pathlib import Path

import torch

from pinfeed.artifacts.runs import latest_run


def main(home: Path, dest: Path) -> None:
    """HOME's training sets, its latest run's ONNX files, manifests and weights -> DEST."""
    shutil.rmtree(dest, ignore_errors=True)
    files = [
        "data/events/meta.json",
        "data/events/users.parquet",
        "data/features/pin_content.parquet",
        "data/features/pin_features.parquet",
    ] + [
        f"data/training_sets/{n}.{e}" for n in ("retrieval", "ranking") for e in ("parquet", "json")
    ]
    for f in files:
        (dest / "home" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(home / f, dest / "home" / f)
    run = latest_run(home / "artifacts")
    for f in [
        "ranking/ranker.onnx",
        "ranking/ranker.manifest.json",
        "ranking/training_run.json",
        "retrieval/query_tower.onnx",
        "retrieval/manifest.json",
        "retrieval/training.json",
    ]:
        (dest / "run" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.root / f, dest / "run" / f)
    record = json.loads((run.ranking / "training_run.json").read_text())
    ckpt = Path(record["models"]["multi_task"]["checkpoint"]) / "state.pt"
    torch.save(
        torch.load(ckpt, map_location="cpu", weights_only=False)["model"],
        dest / "run" / "ranker_state.pt",
    )
    rdir = sorted((run.checkpoints).glob("retrieval-*/checkpoint_*/state.pt"))[-1]
    state = torch.load(rdir, map_location="cpu", weights_only=False)
    torch.save(
        {"model": state["model"], "config": state["config"]}, dest / "run" / "retrieval_state.pt"
    )
    (dest / "SOURCE.txt").write_text(
        f"home {home}\nrun {run.root}\nranker checkpoint {ckpt}\nretrieval checkpoint {rdir}\n"
    )
    print(run.root, ckpt, rdir)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/gpu_lease/make_inputs.py HOME DEST (DEST is replaced)")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
