"""Probe results as JSON-ready dicts and as table rows (the ADRec paper's Table 6 layout).

Values in dicts are fractions in [0, 1]; tables print percent, mean +- sd over the seeds.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from probes.linear import HEADLINE, METRICS, ProbeResult, ProbeSettings

FORMATS = ("table", "json", "markdown")
ROW_LABELS = {
    "micro_precision": "Precision (micro)", "micro_recall": "Recall (micro)", "micro_f1": "F1 (micro)",
    "macro_precision": "Precision (macro)", "macro_recall": "Recall (macro)", "macro_f1": "F1 (macro)",
    "mean_average_precision": "mAP",
}
BASELINE_NAMES = {"gaussian": "Gaussian", "popularity": "popularity", "all_zero": "all-zero"}
BASELINE_NOTES = {
    "gaussian": "a same-shape i.i.d. N(0, 1) table (an untrained embedding)",
    "popularity": "log(1 + interaction count) as the only feature",
    "all_zero": "predicts no label; its mAP (constant scores) is the chance level",
}


def result_dict(result: ProbeResult) -> dict:
    """The paper's three numbers (micro averages) and their sds first, then every metric."""
    out = {name: result.mean[key] for name, key in HEADLINE.items()}
    out.update({f"{name}_sd": result.sd[key] for name, key in HEADLINE.items()})
    out["metrics"] = {key: {"mean": result.mean[key], "sd": result.sd[key],
                            "per_seed": [r[key] for r in result.per_seed]} for key in METRICS}
    out["n_macro_labels"] = [r["n_macro_labels"] for r in result.per_seed]
    return out


def settings_dict(settings: ProbeSettings) -> dict:
    out = dataclasses.asdict(settings)
    out.update(model="BatchNorm1d -> Linear, BCE-with-logits, Adam (frozen table)",
               split=f"random {1 - settings.test_fraction:.0%}/{settings.test_fraction:.0%} item "
                     "split per seed 0..seeds-1",
               headline_average="micro", sd="sample sd (ddof 1) over seeds",
               units="fractions in [0, 1]")
    return out


def _cell(result: ProbeResult, key: str) -> str:
    mean, sd = result.mean[key], result.sd[key]
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} \u00b1 {100 * sd:.1f}"


def result_rows(columns: Sequence[tuple[str, ProbeResult]]) -> tuple[list[str], list[list[str]]]:
    """Table 6's header and rows: metrics down, models across, percent mean +- sd (the caller
    renders them, e.g. with ``collapse_kit.tables.Table``, the first column left-aligned and
    the numbers right-aligned)."""
    header = ["metric (%)"] + [name for name, _ in columns]
    rows = [[ROW_LABELS[key]] + [_cell(r, key) for _, r in columns] for key in METRICS]
    return header, rows


def table_notes(settings: ProbeSettings, labels_source: str, n_items: int, n_labels: int,
                n_occurring: int, baselines: Sequence[str]) -> list[str]:
    """Lines that say how to read the table."""
    batch = "full batch" if settings.batch_size is None else f"batch {settings.batch_size}"
    lines = [
        f"Labels: {labels_source} ({n_items} items, {n_labels} labels, {n_occurring} with a positive item).",
        f"Probe: BatchNorm1d + Linear on the frozen table, BCE, Adam lr {settings.lr:g}, "
        f"{settings.epochs} epochs, {batch}; predict a label if sigmoid >= {settings.threshold:g}.",
        f"Mean \u00b1 sd over {settings.seeds} random {1 - settings.test_fraction:.0%}/"
        f"{settings.test_fraction:.0%} item splits; scored on the held-out items.",
        "Micro: pooled over the labels that occur; macro and mAP: mean over the labels with a "
        "held-out positive. The paper's Precision/Recall/F1 are reported as the micro rows.",
    ]
    for key in baselines:
        lines.append(f"{BASELINE_NAMES[key]}: {BASELINE_NOTES[key]}.")
    return lines
