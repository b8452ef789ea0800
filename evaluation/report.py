"""`pinfeed report`: every evaluation on one Markdown page with its plots.

Reads what the evaluation commands wrote under `reports/` and writes one page:

- retrieval ablation (`pinfeed evaluate retrieval`): Recall@K per positive set and per
  baseline, mean ± std over seeds, exact vs HNSW, the converged table, and the chart;
- the same ablation on the `skewed` preset's world (`--events DIR --out
  reports/retrieval_skewed.json`), where popularity is a strong baseline;
- retrieval tuning (`pinfeed optimize retrieval`): the Ray Tune search, its best config, and
  that config against the default on the held-out days;
- ranking (`pinfeed evaluate ranking`): per head ROC-AUC and PR-AUC of the multi-task model vs
  the single-head and LightGBM baselines, log loss, Brier and ECE before and after
  calibration, and the reliability diagrams;
- ranking tuning (`pinfeed optimize ranking`): the Ray Tune search over the ranker, and its
  best config against the default and LightGBM per head on the test days;
- utility weights (`pinfeed optimize utility`): Ax vs random search vs hand-picked at the same
  trial budget, and the trace;
- query reward (`pinfeed evaluate query-reward`): the closed-loop simulation per policy, at
  the offline job's real cadence, and realtime - offline paired;
- the loop over real HTTP (`pinfeed evaluate closed-loop`): engagement before and after
  retraining on served traffic, reconciliation of everything served and acknowledged, and the
  row-level skew of the logged feature vectors.

A section whose report is missing says which command makes it. Plots are linked relative to
the page; a page written outside `reports/` (e.g. docs/results.md) gets copies of them in a
folder beside it (`<page stem>/`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation.closed_loop import paired_lift
from evaluation.retrieval_report import markdown_table
from evaluation.tune_sections import ranking_tune_section, retrieval_tune_section
from pinfeed.events import describe_event_set
from pinfeed.home import ProjectHome

RETRIEVAL = "retrieval.json"
RETRIEVAL_TUNE = "retrieval_tune.json"
RETRIEVAL_SKEWED = "retrieval_skewed.json"
RANKING = "ranking.json"
RANKING_TUNE = "ranking_tune.json"
UTILITY = "utility.json"
QUERY_REWARD = "query_reward.json"
CLOSED_LOOP = "closed_loop.json"


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _figure(source: Path, page: Path, reports: Path, caption: str) -> str:
    """A Markdown image of `source`, copied beside `page` when the page lives elsewhere."""
    if not source.is_file():
        return f"*({caption}: {source.name} not found)*"
    if page.parent.resolve() == reports.resolve():
        target = source
    else:
        folder = page.parent / page.stem
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copyfile(source, target)
    return f"![{caption}]({target.relative_to(page.parent).as_posix()})"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def retrieval_section(report: dict[str, Any], figure: str, out: str = "") -> list[str]:
    """`out`: the `--out` the command needs when the report is not the default file."""
    config = report["config"]
    events = f" --events {config['events']}" if config.get("events") else ""
    lines = [
        f"Command: `pinfeed evaluate retrieval --seeds {len(config['seeds'])}{events}{out}` "
        f"({config['ablation']['steps']} optimizer steps per model).",
        "",
    ]
    if config.get("event_set"):  # another event set than the page's
        lines += [config["event_set"], ""]
    return [*lines, markdown_table(report), figure]


def skewed_retrieval_section(report: dict[str, Any], figure: str) -> list[str]:
    """The ablation on the `skewed` preset's world (docs/data.md, "How skewed the worlds
    are"), where popularity is a strong baseline."""
    return [
        "The same ablation on a world whose pin exposure and user activity are as unequal as "
        "public logs: `pinfeed data generate --preset skewed --seed 0 --out DIR` "
        '(docs/data.md, "How skewed the worlds are").',
        "",
        *retrieval_section(report, figure, out=f" --out reports/{RETRIEVAL_SKEWED}"),
    ]


def ranking_section(report: dict[str, Any], figure: str) -> list[str]:
    lines = [
        f"Command: `pinfeed evaluate ranking --run-id {report['run_id']}`",
        "",
        f"{report['rows']:,} held-out impressions (never downsampled), "
        f"{report['period'][0]} to {report['period'][1]}; ECE over {report['ece_bins']} equal "
        f"bins ({report['fine_bins']} for `fine`); negatives kept at w = "
        f"{report['calibration']['sample_rate']}.",
        "",
        "| head | base rate | ROC-AUC | PR-AUC (MTL) | PR-AUC (single head) | PR-AUC (LightGBM) "
        "| log loss raw → cal | Brier raw → cal | ECE raw → simple → exact | ECE fine raw → exact "
        "| ECE exact, fine (LightGBM) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gbdt = report.get("lightgbm", {})
    for head, m in report["mtl"].items():
        single = report["single_head"][head]["pr_auc"]
        trees = gbdt.get(head, {})
        trees_ece = f"{trees['ece_cal']:.4f}, {trees['ece_cal_fine']:.4f}" if trees else "not run"
        lines.append(
            f"| {head} | {m['base_rate']:.4f} | {m['roc_auc']:.4f} | {m['pr_auc']:.4f} | "
            f"{single:.4f} | {_number(trees.get('pr_auc'), 4)} | "
            f"{m['log_loss_raw']:.4f} → {m['log_loss_cal']:.4f} | "
            f"{m['brier_raw']:.4f} → {m['brier_cal']:.4f} | {m['ece_raw']:.4f} → "
            f"{m['ece_cal_simple']:.4f} → {m['ece_cal']:.4f} | {m['ece_raw_fine']:.4f} → "
            f"{m['ece_cal_fine']:.4f} | {trees_ece} |"
        )
    lines += ["", figure]
    return lines


def utility_section(report: dict[str, Any], figure: str) -> list[str]:
    def arm(name: str, values: dict[str, Any]) -> str:
        weights = ", ".join(f"{h} {w:.2f}" for h, w in values["weights"].items())
        return (
            f"| {name} | {values['long_click_pr_auc']:.5f} | "
            f"{'yes' if values['constraints_met'] else 'no'} | {weights} |"
        )

    checks = report.get("derived_weight_check", {})
    feasible = {name: c["feasible_trials"] for name, c in checks.items()}
    random_feasible = report.get("random_search_check", {}).get("feasible_trials")
    lines = [
        f"Command: `pinfeed optimize utility --trials {report['trials']} --seed {report['seed']}"
        f" --run-id {report['run_id']}` ({report['initialization_trials']} Sobol trials, then "
        f"the GP; {report['validation_rows']:,} validation impressions).",
        "",
        f"Objective: {report['objective']}; constraints: PR-AUC of "
        + ", ".join(f"{h} >= {v:.4f}" for h, v in report["thresholds"].items())
        + " (the factors times the hand-picked weights' value).",
        "",
        "| arm | long-click PR-AUC | constraints met | weights |",
        "|---|---|---|---|",
        arm("Ax (best)", report["best"]),
        arm("random search (best)", report["random_search"]),
        arm("hand-picked", report["hand_picked"]),
        "",
        f"Feasible trials of {report['trials']}: Ax "
        + ", ".join(f"{count} ({derived} derived)" for derived, count in feasible.items())
        + f"; random search {random_feasible}.",
        "",
        figure,
    ]
    return lines


def _pool_source(source: str) -> str:
    """`onnx:<run>/retrieval` -> the run's models; anything else as it is."""
    if source.startswith("onnx:"):
        return f"run {Path(source.removeprefix('onnx:')).parent.name}'s query tower and pin index"
    return source


def query_reward_section(report: dict[str, Any], figure: str) -> list[str]:
    config = report["config"]
    lines = [
        f"Command: `pinfeed evaluate query-reward --rounds {config['rounds']} --seeds "
        f"{len(report['seeds'])}`",
        "",
        f"{config['users']} simulated users, interest shift at round {report['shift_round']}, "
        f"candidates from {_pool_source(report['retrieval']['source'])}; {report['interval']}.",
        "",
        f"Cadence: {report['cadence']['requests_per_user_per_day']} requests per user per day; "
        f"offline: {report['cadence']['reward_offline']}; realtime: "
        f"{report['cadence']['reward_realtime']}.",
        "",
        "| policy | engagement rate [95% CI] | after the shift | lift vs count [95% CI] "
        "| recovery (rounds) |",
        "|---|---|---|---|---|",
    ]
    for name, summary in report["policies"].items():
        rate, post, lift = (
            summary["engagement_rate"],
            summary["post_shift_engagement_rate"],
            summary["lift_vs_count"],
        )
        recovered = "yes" if all(summary["recovered_per_seed"]) else "not in every seed"
        lines.append(
            f"| {name} | {rate['mean']:.4f} [{rate['ci95'][0]:.4f}, {rate['ci95'][1]:.4f}] | "
            f"{post['mean']:.4f} | {lift['mean']:+.4f} [{lift['ci95'][0]:+.4f}, "
            f"{lift['ci95'][1]:+.4f}] | {summary['recovery_rounds']:.1f} ({recovered}) |"
        )
    paired = report["realtime_vs_offline"]
    post, rounds = paired["post_shift_engagement_rate"], paired["recovery_rounds"]
    lines += [
        "",
        f"Realtime - offline, paired within seed: after the shift {post['mean']:+.4f} "
        f"[{post['ci95'][0]:+.4f}, {post['ci95'][1]:+.4f}] engagement, recovery "
        f"{rounds['mean']:+.1f} [{rounds['ci95'][0]:+.1f}, {rounds['ci95'][1]:+.1f}] rounds.",
    ]
    lines += ["", figure]
    return lines


def _ci(value: dict[str, Any], digits: int = 4) -> str:
    low, high = value["ci95"]
    return f"{value['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


SKEW_EXPLAINED = {
    "cluster_reward__reward": "by design: realtime pushes after feedback exist online only "
    "(mismatched), and serving reads a cluster whose row has no data as no reward (selection "
    "then gives it the average), where the offline row holds its smoothed prior (offline only)",
}
"""Why a feature is known to differ between serving and the offline recomputation."""


def closed_loop_section(report: dict[str, Any], figure: str) -> list[str]:
    config = report["config"]
    lines = [
        f"Command: `pinfeed evaluate closed-loop --seeds {config['seeds']} --rounds "
        f"{config['rounds']} --users {config['users_per_round']} --k {config['k']} --preset "
        f"{config['preset']}` (seeds 0-{config['seeds'] - 1}; each seed a world of its own whose "
        "period ends the day it runs, run A trained by the jobs, served over HTTP, then run B "
        "trained after ingesting phase 1's traffic and switched in with `/admin/reload`).",
        "",
        "| phase | engagement rate [95% CI] | long-click rate [95% CI] | stable | fading | new "
        "| off-interest |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in report["phases"]:
        share = phase["interest_share"]
        lines.append(
            f"| {phase['phase']} | {_ci(phase['engagement_rate'])} | "
            f"{_ci(phase['long_click_rate'])} | "
            + " | ".join(f"{share[k]['mean']:.3f}" for k in ("stable", "fading", "new", "none"))
            + " |"
        )
    lift = paired_lift(report)
    lines += [
        "",
        f"After - before, paired within seed: {lift['mean']:+.4f} [{lift['ci95'][0]:+.4f}, "
        f"{lift['ci95'][1]:+.4f}] engagement.",
    ]
    skew = report["skew"]
    lines += [
        "",
        f"Served impressions {report['served_impressions']:,}, ingested "
        f"{report['ingested_impressions']:,}; acknowledged events lost: "
        f"{report['acknowledged_lost']}. Skew of the logged feature vectors against a "
        f"point-in-time offline recomputation: {skew['match_rate']:.4f} of compared values match"
        + (". Where they differ (seeds and phases summed):" if skew["skewed_features"] else "."),
    ]
    if skew["skewed_features"]:
        lines += [
            "",
            "| feature | values compared | mismatched | online only | offline only | why |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{name}` | {c['rows']:,} | {c['mismatched']:,} | {c['online_only']:,} | "
            f"{c['offline_only']:,} | {SKEW_EXPLAINED.get(name, 'not explained yet')} |"
            for name, c in skew["skewed_features"].items()
        ]
    lines += [
        "",
        "| seed | served | ingested | events acknowledged / ingested / rejected | phase-1 requests"
        " in run B's training set | skew match |",
        "|---|---|---|---|---|---|",
    ]
    for seed in report["seeds"]:
        ingest = seed["ingest"]
        lines.append(
            f"| {seed['seed']} | {seed['served_impressions']:,} | "
            f"{ingest['ingested_impressions']:,} | {seed['acknowledged_events']:,} / "
            f"{ingest['ingested_events']:,} / {sum(ingest['rejected_events'].values()):,} | "
            f"{seed['served_requests_in_new_training_set']} of {seed['phase_1_requests']} | "
            f"{seed['skew']['match_rate']:.4f} |"
        )
    lines += [
        "",
        "A phase-1 request is missing from run B's ranking set only when none of its items was "
        "engaged and its negatives fell to the training set's negative downsampling.",
        "",
        figure,
    ]
    return lines


Section = tuple[str, str, str, str, Callable[[dict[str, Any], str], list[str]]]
SECTIONS: tuple[Section, ...] = (
    ("Retrieval: which positives find future conversions", RETRIEVAL, "retrieval.png",
     "pinfeed evaluate retrieval", retrieval_section),
    ("Retrieval on the skewed world", RETRIEVAL_SKEWED, "retrieval_skewed.png",
     "pinfeed evaluate retrieval --events DIR --out reports/retrieval_skewed.json",
     skewed_retrieval_section),
    ("Retrieval tuning: Ray Tune", RETRIEVAL_TUNE, "retrieval_tune.png",
     "pinfeed optimize retrieval", retrieval_tune_section),
    ("Ranking: four heads, calibrated", RANKING, "ranking_reliability.png",
     "pinfeed evaluate ranking", ranking_section),
    ("Ranking tuning: Ray Tune", RANKING_TUNE, "ranking_tune.png",
     "pinfeed optimize ranking", ranking_tune_section),
    ("Utility weights: Ax vs random search vs hand-picked", UTILITY, "utility_trace.png",
     "pinfeed optimize utility", utility_section),
    ("Query selection: reward vs count in a closed loop", QUERY_REWARD, "query_reward.png",
     "pinfeed evaluate query-reward", query_reward_section),
    ("The loop over HTTP: served traffic back into training", CLOSED_LOOP, "closed_loop.png",
     "pinfeed evaluate closed-loop", closed_loop_section),
)  # fmt: skip


def render(home: ProjectHome, page: Path) -> str:
    """The page's Markdown for the reports under `home`'s reports/."""
    reports = home.reports
    lines = [
        "# pinfeed results",
        "",
        f"Written by `pinfeed report` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Each section "
        "names the command (and seeds) that produced its figures; run in the README's order on "
        "the event set below, they reproduce this page.",
        "",
        describe_event_set(home.events),
    ]
    for title, name, png, command, section in SECTIONS:
        lines += ["", f"## {title}", ""]
        data = _read(reports / name)
        if data is None:
            lines.append(f"Not run yet: `{command}` writes {name}.")
            continue
        lines += section(data, _figure(reports / png, page, reports, title))
    return "\n".join(lines) + "\n"


def write_report(home: ProjectHome, page: Path) -> Path:
    """Write the page for `home`'s reports (and copies of its plots where needed); its path."""
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(home, page))
    return page
