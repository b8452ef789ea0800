"""The results page's sections for the baselines and the tuning: baselines are marked in the
retrieval table, the converged table and the Ray Tune comparison show their figures, and the
ranking table gains LightGBM's PR-AUC and ECE (an older report without it says so), and the
ranker's search sets tuned, default and LightGBM side by side per head."""

from __future__ import annotations

from typing import Any

from evaluation.report import ranking_section, retrieval_section, skewed_retrieval_section
from evaluation.tune_sections import ranking_tune_section, retrieval_tune_section

STATS = {"mean": 0.5, "std": 0.01}
METRICS = ("recall@50", "recall@100", "recall@500", "long_click_recall@100")


def retrieval_report() -> dict[str, Any]:
    model = {m: STATS for m in (*METRICS, "ann_recall@100")}
    return {
        "variants": {"dual_positive": model, "als": {m: STATS for m in METRICS}},
        "index": {"exact_recall@100": 0.5, "ann_recall@100": 0.5},
        "config": {
            "heldout_conversions": 10, "heldout_long_clicks": 20, "n_pins": 30, "seeds": [0],
            "cutoff": "2026-10-11", "index_variant": "dual_positive", "baselines": ["als"],
            "ablation": {"steps": 100},
        },
        "converged": {
            "variants": {"dual_positive": {**model, "recall@100": {"mean": 0.871, "std": 0.014}}},
            "best_step": {"dual_positive": [75, 150]},
            "config": {"every": 25, "k": 100, "validation_days": 1.0, "patience": 4,
                       "max_steps": 3000, "refit": True},
        },
    }  # fmt: skip


def test_retrieval_section_marks_baselines_and_shows_the_converged_table() -> None:
    page = "\n".join(retrieval_section(retrieval_report(), "FIGURE"))
    assert "| als (baseline) | 0.500 ± 0.010 | 0.500 ± 0.010 | 0.500 ± 0.010 | n/a |" in page
    assert "| dual_positive | 0.500 ± 0.010 |" in page
    assert "| dual_positive | 75, 150 | 0.500 ± 0.010 | 0.871 ± 0.014 |" in page
    assert "retrained on all train rows" in page and page.endswith("FIGURE")


def test_retrieval_section_states_the_goal_ratios_of_both_tables() -> None:
    report = retrieval_report()
    report["variants"]["conversions_only"] = {"recall@100": {"mean": 0.4, "std": 0.0}}
    report["variants"]["item_knn"] = {"recall@100": {"mean": 0.45, "std": 0.0}}
    report["config"]["baselines"] = ["als", "item_knn"]
    page = "\n".join(retrieval_section(report, "FIGURE"))
    # equal budget: 0.5 / 0.5 (als beats item_knn), 0.5 / 0.4; converged: 0.871 / the same als
    assert (
        "ratios: dual_positive / best baseline (als, 0.500) = 1.00x; "
        "dual_positive / conversions_only (0.400) = 1.25x." in page
    )
    assert "ratios: dual_positive / best baseline (als, 0.500) = 1.74x." in page


def test_retrieval_tune_section_compares_tuned_with_default() -> None:
    held = {m: 0.8 for m in METRICS}
    report = {
        "variant": "dual_positive",
        "trials": [{}, {}, {}],
        "best": {"best_recall": 0.9, "best_step": 75, "params": {"hidden": 128, "alpha": 0.25}},
        "default": {"best_recall": 0.85, "best_step": 100},
        "held_out": {"tuned": {**held, "recall@100": 0.9}, "default": held, "tuned_steps": 75,
                     "default_steps": 100, "seeds": [0, 1]},
        "settings": {"trials": 3, "seed": 0, "max_steps": 600, "grace_steps": 50,
                     "reduction_factor": 3.0, "converged": {"validation_days": 1.0}},
    }  # fmt: skip
    page = "\n".join(retrieval_tune_section(report, "FIGURE"))
    assert "`pinfeed optimize retrieval --trials 3 --seed 0 --max-steps 600`" in page
    assert (
        "Best of 3 trials: validation Recall@100 0.900 at step 75 (hidden 128, alpha 0.25)" in page
    )
    assert "| default | 100 | 0.800 | 0.800 | 0.800 | 0.800 |" in page
    assert "| tuned | 75 | 0.800 | 0.900 | 0.800 | 0.800 |" in page


def ranking_report(lightgbm: bool) -> dict[str, Any]:
    head = {
        "base_rate": 0.01, "roc_auc": 0.7, "pr_auc": 0.03, "log_loss_raw": 0.1,
        "log_loss_cal": 0.05, "brier_raw": 0.02, "brier_cal": 0.01, "ece_raw": 0.05,
        "ece_cal_simple": 0.004, "ece_cal": 0.001, "ece_raw_fine": 0.05, "ece_cal_fine": 0.002,
    }  # fmt: skip
    report = {
        "run_id": "r1", "rows": 100, "period": ["a", "b"], "ece_bins": 15, "fine_bins": 100,
        "calibration": {"sample_rate": 0.1}, "mtl": {"save": head},
        "single_head": {"save": {"pr_auc": 0.029}},
    }  # fmt: skip
    if lightgbm:
        report["lightgbm"] = {"save": {"pr_auc": 0.0223, "ece_cal": 0.0022, "ece_cal_fine": 0.0024}}
    return report


def test_ranking_section_has_lightgbm_beside_the_networks() -> None:
    page = "\n".join(ranking_section(ranking_report(lightgbm=True), "FIGURE"))
    assert "| save | 0.0100 | 0.7000 | 0.0300 | 0.0290 | 0.0223 |" in page
    assert page.split("\n")[-3].endswith("| 0.0022, 0.0024 |")
    older = "\n".join(ranking_section(ranking_report(lightgbm=False), "FIGURE"))
    assert "| 0.0290 | n/a |" in older and older.split("\n")[-3].endswith("| not run |")


def test_skewed_section_names_its_event_set_and_output_file() -> None:
    report = retrieval_report()
    report["config"] |= {"events": "/data/skewed", "event_set": "Event set: synthetic, LINE."}
    page = "\n".join(skewed_retrieval_section(report, "FIGURE"))
    assert "`pinfeed data generate --preset skewed --seed 0 --out DIR`" in page
    assert (
        "`pinfeed evaluate retrieval --seeds 1 --events /data/skewed "
        "--out reports/retrieval_skewed.json`" in page
    )
    assert "\nEvent set: synthetic, LINE.\n" in page and page.endswith("FIGURE")


def test_ranking_tune_section_sets_tuned_beside_default_and_lightgbm() -> None:
    def arm(pr_auc: float, ece: float) -> dict[str, Any]:
        return {"heads": {"save": {"pr_auc": pr_auc, "ece_cal": ece}}, "mean_pr_auc": pr_auc}

    report = {
        "trials": [
            {"params": {"keep_rate": 0.9}, "best_pr_auc": 0.04},
            {"params": {"keep_rate": 0.2}, "best_pr_auc": 0.03},
            {"params": {"keep_rate": 0.1}, "error": "died"},
        ],
        "best": {"best_pr_auc": 0.04, "best_step": 500,
                 "params": {"width": 256, "depth": 3, "keep_rate": 0.9}},
        "held_out": {"tuned": arm(0.025, 0.0011), "default": arm(0.024, 0.0015),
                     "lightgbm": arm(0.02, 0.001), "rows": 70_000, "seeds": [0, 1],
                     "ece_bins": 15},
        "rows": {"train": 60_000, "validation": 72_000},
        "sample_rate": 0.1,
        "settings": {"trials": 3, "seed": 0, "max_steps": 2000, "grace_steps": 200,
                     "reduction_factor": 3.0, "every": 100},
    }  # fmt: skip
    page = "\n".join(ranking_tune_section(report, "FIGURE"))
    assert "`pinfeed optimize ranking --trials 3 --seed 0 --max-steps 2000`" in page
    assert "validation PR-AUC 0.0400 at step 500 (width 256, depth 3, keep_rate 0.9;" in page
    assert "| PR-AUC default | PR-AUC tuned | PR-AUC lightgbm | ECE default |" in page
    assert "| save | 0.0240 | 0.0250 | 0.0200 | 0.0015 | 0.0011 | 0.0010 |" in page
    assert "| mean | 0.0240 | 0.0250 | 0.0200 | | | |" in page
    assert "keep_rate >= 0.5 reached a mean validation PR-AUC of 0.0400 (1 trials)" in page
    assert "below 0.5 0.0300 (1)" in page
    assert "Tuned / LightGBM PR-AUC: save 1.25x." in page
