"""The collapse monitor: cheap collapse statistics of the item table during training.

``CollapseMonitor`` works in any PyTorch training loop (``monitor.step(epoch)``, a table given
as a callable), in PyTorch Lightning (``lightning_callback``) and as collapse-kit's trainer
callback (``adrec.train.train_stage(callbacks=[...])``): at every evaluation it reads
``model.item_embeddings()`` and returns a ``"collapse"`` record that the trainer writes into
that epoch's line of the run log (``<stage>.log.jsonl``). The statistics:

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

from collapse_kit.errors import UserError
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
    """Cheap collapse statistics of an item table during training, for any training loop.

    In a plain PyTorch loop::

        monitor = CollapseMonitor(lambda: model.item_emb.weight, every=5)
        for epoch in range(epochs):
            ...                                  # one epoch of training
            stats = monitor.step(epoch)          # dict, or None between the `every` epochs
        monitor.history                          # [{"epoch": 0, "sv_entropy": ..., ...}, ...]

    ``table`` is a callable returning the current table (a tensor, with or without grad, on any
    device, or an array), read without touching autograd. ``extras`` adds statistics of your
    own, ``{name: fn(E) -> float}`` on the float64 numpy table, e.g. ``knn_label_agreement``
    against item labels. Cost per call: one blocked QR of the (n_items, d) table (``spectra``)
    and small d x d SVDs, plus the copy to
    the CPU; measured on the 2-core dev CPU while it was busy (load 3.3-3.8, 2026-12-05):
    18-32 ms for 1,008 x 128 (ML-100K) and 0.6-1.0 s for 64,669 x 128 (``seconds`` in every
    record says what a call took).

    It is also collapse-kit's trainer callback (``on_evaluate``; ``table`` None reads
    ``model.item_embeddings()``), and ``lightning_callback`` adapts it to PyTorch Lightning.
    """

    def __init__(self, table=None, *, every: int = 1, extras: dict | None = None):
        if table is not None and not callable(table):
            raise UserError("CollapseMonitor(table=...) takes a callable returning the table, "
                            "e.g. lambda: model.item_emb.weight")
        if not isinstance(every, int) or every < 1:
            raise UserError(f"every must be a positive integer (epochs); got {every!r}")
        self.table, self.every, self.extras = table, every, dict(extras or {})
        self.history: list[dict] = []

    def step(self, epoch: int) -> dict | None:
        """Record the statistics at ``epoch`` when it is a multiple of ``every``."""
        if self.table is None:
            raise UserError("this monitor has no table to read; create it with "
                            "CollapseMonitor(lambda: <the item table>)")
        if epoch % self.every:
            return None
        return self._record(self.table(), epoch=epoch)

    def on_evaluate(self, *, model, stage: str, epoch: int) -> dict:
        """collapse-kit's trainer: the record goes into that epoch's log line."""
        read = self.table or model.item_embeddings
        return {"collapse": self._record(read(), epoch=epoch, stage=stage)}

    def _record(self, table, **where) -> dict:
        t0 = time.perf_counter()
        E = _as_numpy(table)
        stats = collapse_stats(E)
        for name, fn in self.extras.items():
            stats[name] = float(fn(E))
        stats["seconds"] = round(time.perf_counter() - t0, 5)
        self.history.append({**where, **stats})
        return stats


def _as_numpy(table) -> np.ndarray:
    if hasattr(table, "detach"):  # a torch tensor, on any device
        table = table.detach().float().cpu().numpy()
    return np.asarray(table, dtype=np.float64)


def lightning_callback(monitor: CollapseMonitor, *, log: bool = True):
    """A PyTorch Lightning ``Callback`` that calls ``monitor.step(trainer.current_epoch)`` at
    the end of every training epoch and, with ``log``, logs the statistics through the module
    (``collapse/<stat>``). Needs ``lightning`` (or ``pytorch_lightning``) installed."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise UserError("lightning_callback needs PyTorch Lightning; install it with "
                            "pip install lightning") from None

    class CollapseMonitorCallback(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            stats = monitor.step(trainer.current_epoch)
            if stats and log:
                for name, value in stats.items():
                    pl_module.log(f"collapse/{name}", value)

    return CollapseMonitorCallback()


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
