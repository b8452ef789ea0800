"""`import_interactions`: an interaction log in, a validated EventSet folder out.

Stages: read -> check rows (stop at the first bad row, or divert bad rows to a rejects CSV) ->
map ids -> impressions and conversions -> pin embeddings and topics -> assemble -> validate ->
write (event set plus id_map/users.parquet and id_map/pins.parquet: external_id -> id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from pinfeed.errors import SchemaError
from pinfeed.events import EventSet, write_event_set
from pinfeed.importer.assemble import assemble
from pinfeed.importer.config import ImportConfig, ImportResult
from pinfeed.importer.embeddings import (
    FALLBACK,
    GIVEN,
    LEARNED,
    PinEmbeddings,
    pin_embeddings,
    topics,
)
from pinfeed.importer.impressions import Attached, AttachRules, build_impressions
from pinfeed.importer.mapping import IdMap, build_id_map
from pinfeed.importer.reader import RawLog, read_log
from pinfeed.importer.rows import CheckedRows, check_rows, raise_on_problems, write_rejects
from pinfeed.validate import validate

ID_MAP_DIR = "id_map"
STAGES = ("read", "check", "map ids", "impressions", "embeddings", "assemble", "validate", "write")


def import_interactions(
    path: Path,
    out: Path,
    *,
    config: ImportConfig | None = None,
    rejects: Path | None = None,
    progress: bool = True,
) -> ImportResult:
    """Import the log at `path` into an event set at `out`.

    Without `rejects`, the first bad row stops the import (pinfeed.errors.ValidationError naming
    row, field and reason; rows count from 1 after the header). With `rejects`, every bad row is
    written there (original columns + row_number, field, reason) and the rest is imported.
    Missing columns or an unreadable file raise SchemaError. Nothing is written to `out` unless
    the assembled event set passes pinfeed.validate.
    """
    config = config or ImportConfig()
    path, out = Path(path), Path(out)
    rejects = None if rejects is None else Path(rejects)
    with tqdm(total=len(STAGES), unit="stage", disable=not progress) as bar:
        stage = _Stage(bar)
        raw, checked = _read_and_check(path, rejects)
        stage("map ids")
        user_map, user_ids = build_id_map(checked.good["user_ext"], "user")
        pin_map, pin_ids = build_id_map(checked.good["item_ext"], "pin")
        rows = checked.good.drop(columns=["user_ext", "item_ext"]).assign(
            user=user_ids, pin=pin_ids
        )
        stage("impressions")
        attached = build_impressions(rows, _attach_rules(config))
        stage("embeddings")
        embeddings = _embed(attached, user_map, pin_map, config)
        stage("assemble")
        counts = {
            "rows_read": raw.rows_read,
            "rows_imported": len(rows),
            "rows_rejected": len(checked.problems),
            "duplicates_merged": attached.duplicates_merged,
            "impressions_synthesised": attached.synthesised,
            "long_clicks_below_threshold": attached.long_clicks_below_threshold,
        }
        events = assemble(
            attached,
            rows,
            n_users=len(user_map),
            embeddings=embeddings.vectors,
            topics=topics(embeddings, config.n_topics),
            long_click_threshold_s=config.long_click_threshold_s,
            details=_details(path, rejects, config, counts),
        )
        stage("validate")
        validate(events).raise_if_bad()
        stage("write")
        _write(events, out, user_map, pin_map)
        stage(None)
    return _result(
        out, counts, events, embeddings, rejects, n_users=len(user_map), n_pins=len(pin_map)
    )


def _read_and_check(path: Path, rejects: Path | None) -> tuple[RawLog, CheckedRows]:
    """Read and check every row; stop at the first bad one unless rejects are written (and
    stop anyway when no good row is left)."""
    raw = read_log(path)
    if raw.rows_read == 0:
        raise SchemaError(f"{path}: no data rows below the header")
    checked = check_rows(raw)
    if rejects is not None:
        write_rejects(raw, checked, rejects)
    if rejects is None or checked.good.empty:
        raise_on_problems(raw, checked)
    return raw, checked


def _attach_rules(config: ImportConfig) -> AttachRules:
    return AttachRules(
        long_click_threshold_s=config.long_click_threshold_s,
        attach_window_s=config.attach_window_s,
        conversion_window_s=config.conversion_window_s,
        missing_click_dwell_s=config.missing_click_dwell_s,
    )


def _embed(
    attached: Attached, user_map: IdMap, pin_map: IdMap, config: ImportConfig
) -> PinEmbeddings:
    """Co-engagement = impressions with closeup, save or click, plus conversions."""
    imp = attached.impressions
    engaged = imp[imp["closeup"] | imp["save"] | imp["click"]]
    conv = attached.conversions
    return pin_embeddings(
        np.concatenate([engaged["user"].to_numpy(), conv["user"].to_numpy()]).astype(np.int64),
        np.concatenate([engaged["pin"].to_numpy(), conv["pin"].to_numpy()]).astype(np.int64),
        len(user_map),
        pin_map,
        dim=config.embedding_dim,
        min_engagements=config.min_item_engagements,
        given=config.item_embeddings,
    )


def _details(
    path: Path, rejects: Path | None, config: ImportConfig, counts: dict[str, int]
) -> dict:
    """Provenance kept in meta.json."""
    return {
        "input": str(path),
        "rejects": None if rejects is None else str(rejects),
        "id_maps": {"users": f"{ID_MAP_DIR}/users.parquet", "pins": f"{ID_MAP_DIR}/pins.parquet"},
        "config": config.model_dump(mode="json"),
        "counts": counts,
    }


def _write(events: EventSet, out: Path, user_map: IdMap, pin_map: IdMap) -> None:
    write_event_set(events, out)
    user_map.write(out / ID_MAP_DIR / "users.parquet")
    pin_map.write(out / ID_MAP_DIR / "pins.parquet")


def _result(
    out: Path,
    counts: dict[str, int],
    events: EventSet,
    embeddings: PinEmbeddings,
    rejects: Path | None,
    *,
    n_users: int,
    n_pins: int,
) -> ImportResult:
    return ImportResult(
        out=out,
        **counts,
        impressions=events.impressions.num_rows,
        conversions=events.conversions.num_rows,
        users=n_users,
        pins=n_pins,
        embeddings_learned=embeddings.count(LEARNED),
        embeddings_given=embeddings.count(GIVEN),
        embeddings_fallback=embeddings.count(FALLBACK),
        has_impressions=events.meta.has_impressions,
        rejects=rejects,
    )


class _Stage:
    """Advances the progress bar and names the stage now running."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._bar.set_description(STAGES[0])

    def __call__(self, name: str | None) -> None:
        self._bar.update(1)
        if name is not None:
            self._bar.set_description(name)
