"""The results page's sections for the two Ray Tune searches (`pinfeed optimize retrieval`,
`pinfeed optimize ranking`): the command and budget, the best trial, and the tuned config
beside the default (and, for the ranker, LightGBM) on the held-out days. `evaluation.report`
places them on the page."""

from __future__ import annotations

from typing import Any


def retrieval_tune_section(report: dict[str, Any], figure: str) -> list[str]:
    settings, held, best = report["settings"], report["held_out"], report["best"]
    params = ", ".join(
        f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in best["params"].items()
    )
    seeds = len(held["seeds"])
    lines = [
        f"Command: `pinfeed optimize retrieval --trials {settings['trials']} --seed "
        f"{settings['seed']} --max-steps {settings['max_steps']}` (Ray Tune: random search + "
        f"ASHA, grace {settings['grace_steps']} steps, reduction factor "
        f"{settings['reduction_factor']:g}; variant {report['variant']}; validation: the last "
        f"{settings['converged']['validation_days']:g} train day, test days untouched).",
        "",
        f"Best of {len(report['trials'])} trials: validation Recall@100 "
        f"{best['best_recall']:.3f} at step {best['best_step']} ({params})"
        + (
            f"; the default config, trained the same way: {default['best_recall']:.3f} at "
            f"step {default['best_step']}."
            if (default := report.get("default"))
            else "."
        ),
        "",
        f"Held out (refitted on all train rows for the early-stopped step count, mean of "
        f"{seeds} seeds):",
        "",
        "| config | steps | conv R@50 | conv R@100 | conv R@500 | long-click R@100 |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("default", "tuned"):
        m = held[arm]
        lines.append(
            f"| {arm} | {held[f'{arm}_steps']} | {m['recall@50']:.3f} | {m['recall@100']:.3f} | "
            f"{m['recall@500']:.3f} | {m['long_click_recall@100']:.3f} |"
        )
    return [*lines, "", figure]


def ranking_tune_section(report: dict[str, Any], figure: str) -> list[str]:
    settings, held, best = report["settings"], report["held_out"], report["best"]
    params = ", ".join(
        f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in best["params"].items()
    )
    arms = [arm for arm in ("default", "tuned", "lightgbm") if arm in held]
    lines = [
        f"Command: `pinfeed optimize ranking --trials {settings['trials']} --seed "
        f"{settings['seed']} --max-steps {settings['max_steps']}` (Ray Tune: random search + "
        f"ASHA, grace {settings['grace_steps']} steps, reduction factor "
        f"{settings['reduction_factor']:g}; every {settings['every']} steps the mean over heads "
        f"of PR-AUC on {report['rows']['validation']:,} validation impressions; "
        f"{report['rows']['train']:,} training rows at w = {report['sample_rate']:g}).",
        "",
        f"Best of {len(report['trials'])} trials: validation PR-AUC {best['best_pr_auc']:.4f} "
        f"at step {best['best_step']} ({params}; keep_rate multiplies w).",
        "",
        f"Test days ({held['rows']:,} impressions, never downsampled): default = the job's "
        "shape and learning rate, early-stopped like a trial; networks are the mean of "
        f"{len(held['seeds'])} seeds; ECE is calibrated, {held['ece_bins']} bins.",
        "",
        "| head | "
        + " | ".join(f"PR-AUC {arm}" for arm in arms)
        + " | "
        + " | ".join(f"ECE {arm}" for arm in arms)
        + " |",
        "|---|" + "---|" * (2 * len(arms)),
    ]
    for head in held["tuned"]["heads"]:
        pr = " | ".join(f"{held[arm]['heads'][head]['pr_auc']:.4f}" for arm in arms)
        ece = " | ".join(f"{held[arm]['heads'][head]['ece_cal']:.4f}" for arm in arms)
        lines.append(f"| {head} | {pr} | {ece} |")
    means = " | ".join(f"{held[arm]['mean_pr_auc']:.4f}" for arm in arms)
    lines += [f"| mean | {means} |" + " |" * len(arms), ""]
    scored = [t for t in report["trials"] if "best_pr_auc" in t]
    light = [t["best_pr_auc"] for t in scored if t["params"]["keep_rate"] >= 0.5]
    heavy = [t["best_pr_auc"] for t in scored if t["params"]["keep_rate"] < 0.5]
    if light and heavy:
        lines += [
            f"Downsampling below the set's rate: trials with keep_rate >= 0.5 reached a mean "
            f"validation PR-AUC of {sum(light) / len(light):.4f} ({len(light)} trials), those "
            f"below 0.5 {sum(heavy) / len(heavy):.4f} ({len(heavy)}).",
            "",
        ]
    if "lightgbm" in held:
        ratios = ", ".join(
            f"{head} {m['pr_auc'] / held['lightgbm']['heads'][head]['pr_auc']:.2f}x"
            for head, m in held["tuned"]["heads"].items()
        )
        lines += [f"Tuned / LightGBM PR-AUC: {ratios}.", ""]
    return [*lines, figure]
