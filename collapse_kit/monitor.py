"""The collapse monitor: cheap collapse statistics of the item table during training.

``CollapseMonitor`` is a trainer callback (``adrec.train.train_stage(callbacks=[...])``): at every
evaluation it reads ``model.item_embeddings()`` and returns a ``"collapse"`` record that the
trainer writes into that epoch's line of the run log (``<stage>.log.jsonl``):

* ``sv_entropy``: singular-value entropy of the column-standardised table (nats; max ln d),
  the paper's Table 5 definition (``collapse_kit.metrics.singular_value_entropy``);
* ``effective_rank``: exp of the entropy of the normalised singular values of the table as it is
  (Roy & Vetterli 2007; RankMe), in [1, d];
* ``top_singular_value``: the largest singular value of the column-standardised table;
* ``mean_row_norm``: the mean L2 norm of the item vectors (raw table);
* ``seconds``: the time the statistics took.

One thin SVD of an (n_items, d) table per evaluation: milliseconds on ML-100K.
This module does not import ``adrec``; it only needs an object with ``item_embeddings()``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from collapse_kit.metrics import (effective_rank, row_norm_stats, singular_value_entropy,
                                  spectra, top_singular_values)

STATS = ("sv_entropy", "effective_rank", "top_singular_value", "mean_row_norm")


def collapse_stats(E) -> dict[str, float]:
    """The monitor's four statistics of a table E (n_items, d); see the module docstring."""
    E = np.asarray(E, dtype=np.float64)
    sp = spectra(E)  # the SVDs once, shared by the three spectral statistics
    return {
        "sv_entropy": float(singular_value_entropy(sp)),
        "effective_rank": float(effective_rank(sp)),
        "top_singular_value": float(top_singular_values(sp, k=1)[0]),
        "mean_row_norm": float(row_norm_stats(E)["mean"]),
    }


class CollapseMonitor:
    """Trainer callback recording :func:`collapse_stats` at every evaluation."""

    def on_evaluate(self, *, model, stage: str, epoch: int) -> dict:
        t0 = time.perf_counter()
        E = model.item_embeddings().detach().float().cpu().numpy()
        stats = collapse_stats(E)
        stats["seconds"] = round(time.perf_counter() - t0, 5)
        return {"collapse": stats}


def read_trajectory(run_dir: str | Path, stages: list[str] | None = None) -> list[dict]:
    """Collapse records of a run folder, in stage order, with a cumulative ``step`` (epochs).

    ``stages`` defaults to the stage logs present, ordered stage1, stage2, stage3, then others.
    """
    run_dir = Path(run_dir)
    logs = {p.name[: -len(".log.jsonl")]: p for p in run_dir.glob("*.log.jsonl")}
    if stages is None:
        order = ["stage1", "stage2", "stage3"]
        stages = [s for s in order if s in logs] + sorted(s for s in logs if s not in order)
    out, offset = [], 0
    for stage in stages:
        if stage not in logs:
            raise FileNotFoundError(2, f"no log for stage {stage!r} in run folder",
                                    str(run_dir / f"{stage}.log.jsonl"))
        rows = [json.loads(x) for x in logs[stage].read_text().splitlines() if x.strip()]
        for r in rows:
            if "collapse" in r:
                out.append({"stage": stage, "epoch": r["epoch"], "step": offset + r["epoch"],
                            **r["collapse"]})
        offset += max((r["epoch"] for r in rows), default=0)
    return out


def plot_trajectories(runs: dict[str, list[dict]], *, stats=STATS):
    """One panel per statistic; one line per run (name -> read_trajectory output).

    Stage boundaries of multi-stage runs are drawn as dotted vertical lines. Returns the figure.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(3.6 * len(stats), 3.0))
    axes = fig.subplots(1, len(stats), squeeze=False)
    for ax, stat in zip(axes[0], stats):
        for name, traj in runs.items():
            if not traj:
                continue
            ax.plot([r["step"] for r in traj], [r[stat] for r in traj], marker=".", ms=3,
                    lw=1.2, label=name)
            stages = [r["stage"] for r in traj]
            for i in range(1, len(traj)):
                if stages[i] != stages[i - 1]:
                    x = traj[i - 1]["step"] + 0.5 * (traj[i]["step"] - traj[i - 1]["step"])
                    ax.axvline(x, color="0.6", ls=":", lw=1)
        ax.set_title(stat.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch (stages concatenated)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
