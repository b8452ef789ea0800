"""The one-process alternative of `benchmarks/serve_load.py`: a single uvicorn FastAPI process
that, per request, reads the user and every candidate pin through Feast `get_online_features`
and runs both models in torch eager (same index, selection, calibration and utility code).

    python -m benchmarks.serve_load_baseline <home> <run_id> <port>
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from pinfeed.artifacts.index import MISSING_PIN, load_pin_index
from pinfeed.artifacts.runs import load_run
from pinfeed.calibration import calibrate_logits
from pinfeed.home import ProjectHome
from pinfeed.query_selection import SelectionConfig
from pinfeed.utility import load_utility_weights, utility
from serving.stages.breaker import StoreBreaker
from serving.stages.contract import check_against_services
from serving.stages.features import Features
from serving.stages.online import connect, service_refs
from serving.stages.pin_cache import load_pin_cache
from serving.stages.pipeline import POPULARITY
from serving.stages.ranker import build_ranker_inputs
from serving.stages.selector import QuerySelector
from training.quick import TORCH_DIR


class Body(BaseModel):
    user_id: int
    k: int


def make_app(home: Path, run_id: str) -> FastAPI:
    torch.set_num_threads(1)
    store = connect(ProjectHome(home), None)
    run = load_run(home / "artifacts", run_id)
    check_against_services(run, store)
    refs = service_refs(store)
    user_columns = run.retrieval.query_tower.source_column_order()
    saved = run.layout.root / TORCH_DIR
    query_tower = torch.load(saved / "query_tower.pt", weights_only=False).eval()
    ranker = torch.load(saved / "ranker.pt", weights_only=False).eval()
    index = load_pin_index(run.layout.retrieval)
    weights = load_utility_weights(run.layout.utility)
    rates = run.ranker.calibration_rate_vector()
    selector = QuerySelector(SelectionConfig())
    features = Features(store, refs, None, StoreBreaker(1.0))  # type: ignore[arg-type]
    app = FastAPI()
    counter = iter(range(1, 1 << 62))

    def pins(ids: np.ndarray):  # every candidate read through Feast, per request
        return load_pin_cache(
            store, refs.pin, ids,
            content_column=run.ranker.source_columns["content_embedding"],
            topic_column=run.ranker.source_columns["topic"],
            popularity_column=POPULARITY, content_dim=run.ranker.embedding_dim,
            n_popular=1, materialised=None,
        )  # fmt: skip

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/recommend")
    def recommend(body: Body) -> dict[str, list[int]]:
        user = features.read_user(body.user_id)
        queries = selector.select(next(counter), user.clusters, user.rewards, None)
        if queries is None:
            return {"items": []}
        query_pins = np.unique(queries.query_pin_ids)
        content = pins(query_pins).content_of(query_pins)
        dense = np.array([[user.scalar(c) for c in user_columns]] * len(query_pins), np.float32)
        with torch.inference_mode():
            embedding = query_tower(
                torch.full((len(query_pins),), body.user_id), torch.from_numpy(dense),
                torch.from_numpy(query_pins), torch.from_numpy(content),
            ).numpy()  # fmt: skip
        found, _ = index.search(embedding, -(-500 // len(query_pins)))
        candidates = np.unique(found[found != MISSING_PIN])[:500]
        sources = np.repeat(query_pins, found.shape[1])[np.isin(found.ravel(), candidates)][
            : len(candidates)
        ]
        inputs = build_ranker_inputs(
            run.ranker, run.run_id, user, pins(candidates), candidates, sources
        )
        with torch.inference_mode():
            logits = ranker(
                *(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.as_tuple())
            ).numpy()
        scores = utility(calibrate_logits(logits, rates), weights)
        return {"items": candidates[np.argsort(-scores)[: body.k]].tolist()}

    return app


if __name__ == "__main__":
    home, run_id, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    uvicorn.run(make_app(home, run_id), host="127.0.0.1", port=port, log_level="warning")
