"""`pinfeed evaluate retrieval`: run the ablation and write its JSON, Markdown table and chart.

    evaluate_retrieval(home, out=Path("reports/retrieval.json"), seeds=3)
      -> reports/retrieval.json   {"variants": {NAME: {"recall@100": {"mean", "std"}, ...}},
                                   (NAME: the six two-tower variants and the baselines
                                    popularity, item_knn, als, which have no HNSW column),
                                   "index": {"exact_recall@100", "ann_recall@100"}, "config"}
                                   "converged": {"variants", "best_step", "steps",
                                                 "validation", "config"} (or {"skipped"})
         reports/retrieval.md     one row per variant, mean ± std over seeds; the converged
                                  table below it
         reports/retrieval.png    Recall@100 per variant (conversions, long clicks), std bars

With `events`, any event set in the schema (generated or imported) is evaluated: its features
and retrieval training set are built into a temporary home first.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.retrieval import AblationConfig, run_ablation
from evaluation.retrieval_data import prepare_event_home, time_split
from pinfeed.events import describe_event_set
from pinfeed.home import ProjectHome

CONVERSION_METRICS = ("recall@50", "recall@100", "recall@500", "ann_recall@100")
LONG_CLICK_METRIC = "long_click_recall@100"


@dataclass(frozen=True)
class RetrievalReport:
    """The report's data and the files it was written to."""

    data: dict[str, Any]
    json_path: Path
    markdown_path: Path
    chart_path: Path


def _cell(stats: dict[str, float | None] | None) -> str:
    if stats is None or stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(report: dict[str, Any]) -> str:
    """The ablation as a Markdown table (mean ± std over seeds) with the index comparison."""
    metrics = (*CONVERSION_METRICS, LONG_CLICK_METRIC)
    config = report["config"]
    lines = [
        f"Held-out conversions: {config['heldout_conversions']}, long clicks: "
        f"{config['heldout_long_clicks']}, pins: {config['n_pins']}, seeds: "
        f"{len(config['seeds'])}, cutoff {config['cutoff']}.",
        "",
        "| variant | conv R@50 | conv R@100 | conv R@500 | conv R@100 (HNSW) | long-click R@100 |",
        "|---|---|---|---|---|---|",
    ]
    baseline_names = set(config.get("baselines", ()))
    for name, values in report["variants"].items():
        label = f"{name} (baseline)" if name in baseline_names else name
        lines.append(f"| {label} | " + " | ".join(_cell(values.get(m)) for m in metrics) + " |")
    index = {name: _number(value) for name, value in report["index"].items()}
    baselines = {n: v for n, v in report["variants"].items() if n in baseline_names}
    ratios = ratio_line(report["variants"], baselines)
    lines += ["", *ratios, *([""] if ratios else [])]
    lines += [
        f"Index ({config['index_variant']}): exact Recall@100 {index['exact_recall@100']}, "
        f"HNSW Recall@100 {index['ann_recall@100']}.",
    ]
    if "converged" in report:
        lines += ["", *converged_table(report["converged"], baselines)]
    return "\n".join(lines) + "\n"


def _recall100(stats: dict[str, Any]) -> float | None:
    """Mean conversion Recall@100 of one table row (None where the row lacks it)."""
    return (stats.get("recall@100") or {}).get("mean")


def ratio_line(models: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    """dual_positive's conversion Recall@100 over the best baseline's and over
    conversions_only's (issue 17's goals: >= 1.3x and >= 1.2x) as one line; nothing when
    dual_positive is not in `models`."""
    ours = _recall100(models.get("dual_positive", {}))
    if not ours:
        return []
    parts = []
    scored = {name: r for name, v in baselines.items() if (r := _recall100(v))}
    if scored:
        best = max(scored, key=lambda name: scored[name])
        parts.append(
            f"dual_positive / best baseline ({best}, {scored[best]:.3f}) = "
            f"{ours / scored[best]:.2f}x"
        )
    if conversions := _recall100(models.get("conversions_only", {})):
        parts.append(
            f"dual_positive / conversions_only ({conversions:.3f}) = {ours / conversions:.2f}x"
        )
    return [f"Conversion Recall@100 ratios: {'; '.join(parts)}."] if parts else []


def converged_table(converged: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    """The converged variants (early stopping, then refit) as Markdown lines; the ratios
    against `baselines` (the equal-budget table's: they are fitted once) below them."""
    if "skipped" in converged:
        return [f"Converged table: skipped ({converged['skipped']})."]
    settings = converged["config"]
    refit = (
        "then retrained on all train rows for that many steps"
        if settings["refit"]
        else ("the best checked model kept")
    )
    lines = [
        f"Trained to convergence: checked every {settings['every']} steps by Recall@"
        f"{settings['k']} of the conversions and long clicks of the last "
        f"{settings['validation_days']:g} train day(s), stopped after "
        f"{settings['patience']} checks without improvement (cap {settings['max_steps']}), "
        f"{refit}.",
        "",
        "| variant (converged) | best step per seed | conv R@50 | conv R@100 | conv R@500 "
        "| conv R@100 (HNSW) | long-click R@100 |",
        "|---|---|---|---|---|---|---|",
    ]
    metrics = (*CONVERSION_METRICS, LONG_CLICK_METRIC)
    for name, values in converged["variants"].items():
        best = ", ".join(str(step) for step in converged["best_step"][name])
        cells = " | ".join(_cell(values.get(m)) for m in metrics)
        lines.append(f"| {name} | {best} | {cells} |")
    ratios = ratio_line(converged["variants"], baselines)
    return [*lines, *([""] if ratios else []), *ratios]


def bar_chart(report: dict[str, Any], path: Path) -> Path:
    """Recall@100 per variant, held-out conversions beside long clicks, with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    width = 0.38
    figure, axes = plt.subplots(figsize=(9, 4.8))
    for offset, metric, label in (
        (-width / 2, "recall@100", "held-out conversions"),
        (width / 2, LONG_CLICK_METRIC, "held-out long clicks"),
    ):
        means = [report["variants"][n][metric]["mean"] or 0.0 for n in names]
        stds = [report["variants"][n][metric]["std"] or 0.0 for n in names]
        positions = [i + offset for i in range(len(names))]
        axes.bar(positions, means, width, yerr=stds, capsize=3, label=label)
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes.set_ylabel("Recall@100 (mean over seeds)")
    axes.set_ylim(0, 1)
    axes.set_title("Retrieval ablation: positive sets and baselines")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(report: dict[str, Any], out: Path) -> RetrievalReport:
    """Write `out` (JSON), `out` with .md and .png beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = out.with_suffix(".md")
    markdown.write_text(markdown_table(report))
    chart = bar_chart(report, out.with_suffix(".png"))
    return RetrievalReport(report, out, markdown, chart)


def evaluate_retrieval(
    home: ProjectHome,
    out: Path,
    seeds: int = 3,
    events: Path | None = None,
    config: AblationConfig | None = None,
) -> RetrievalReport:
    """Run the ablation on `home` (or on the event set `events`) and write the report."""
    config = (config or AblationConfig()).model_copy(update={"seeds": seeds})
    if events is None:
        split = time_split(home, home.events, config.holdout_days)
        return write_report(run_ablation(split, config), out)
    with tempfile.TemporaryDirectory(prefix="pinfeed-eval-") as root:
        event_home = prepare_event_home(Path(events), Path(root))
        split = time_split(event_home, Path(events), config.holdout_days)
        report = run_ablation(split, config)
    report["config"]["events"] = str(events)
    report["config"]["event_set"] = describe_event_set(Path(events))
    return write_report(report, out)
