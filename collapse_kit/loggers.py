"""Mirror a run's log to TensorBoard or Weights & Biases (``collapse-kit train --logger``).

The run folder's JSON-lines logs (``<stage>.log.jsonl``) stay the source of truth: a logger
receives each epoch's record exactly as the trainer wrote it (``on_log``, a trainer callback
hook) and writes its numbers as scalars, one series per stage:

* ``<stage>/loss`` and every other loss term, ``<stage>/lr``, ``<stage>/seconds``;
* ``<stage>/valid/<metric>`` (HR@k, NDCG@k) at the evaluated epochs, ``<stage>/eval_seconds``;
* ``<stage>/collapse/<statistic>`` (the collapse monitor's record) at the evaluated epochs;

with the stage's epoch as the step. ``finish`` adds the final test metrics (``test/<metric>``)
and, for TensorBoard, the final item table to the Embedding Projector with each item's id and
metadata. ``tensorboard`` and ``wandb`` are optional extras; asking for one that is not
installed is one clear error naming the extra, raised before any training starts.

W&B runs in offline mode (files under ``OUT/wandb``, ``wandb sync`` uploads them later) unless
the user configured it: ``WANDB_MODE`` set, or an API key in ``WANDB_API_KEY`` or in
``~/.netrc`` (what ``wandb login`` writes).
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path

from collapse_kit.errors import UserError

LOGGERS = ("none", "tensorboard", "wandb")
EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb"}


def scalars(record: dict) -> dict[str, float]:
    """The scalar series of one epoch's log record, named ``<stage>/...`` (see module doc)."""
    stage = record.get("stage", "train")
    out = {}
    for key, value in record.items():
        if key in ("stage", "epoch"):
            continue
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    out[f"{stage}/{key}/{name}"] = float(inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{stage}/{key}"] = float(value)
    return out


def make_logger(kind: str, out_dir: str | Path, *, name: str, config: dict | None = None):
    """The logger ``kind`` (one of LOGGERS) writing under ``out_dir``; None for "none"."""
    if kind not in LOGGERS:
        raise UserError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGERS)}")
    if kind == "none":
        return None
    if kind == "tensorboard":
        return TensorBoardLogger(Path(out_dir) / "tensorboard")
    return WandbLogger(Path(out_dir), name=name, config=config)


def _missing(kind: str) -> UserError:
    return UserError(f"--logger {kind} needs the {kind} package; install it with "
                     f"pip install 'collapse-kit[{EXTRA[kind]}]' (or pip install {kind}), "
                     "or use --logger none")


class TensorBoardLogger:
    """Event files under ``log_dir`` (``tensorboard --logdir log_dir``)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_log(self, record: dict) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["epoch"])
        self.writer.flush()

    def finish(self, test: dict | None = None, *, table=None, ids=None,
               metadata: dict[str, list] | None = None) -> None:
        """Test metrics as ``test/<metric>`` and the item table in the Embedding Projector
        (one metadata row per item: ``item_id`` and the ``metadata`` columns)."""
        for name, value in (test or {}).items():
            self.writer.add_scalar(f"test/{name}", float(value), global_step=0)
        if table is not None:
            import torch

            columns = {"item_id": list(ids if ids is not None else range(len(table))),
                       **(metadata or {})}
            rows = [[str(columns[c][i]) or "-" for c in columns] for i in range(len(table))]
            self.writer.add_embedding(torch.as_tensor(table, dtype=torch.float32),
                                      metadata=rows, metadata_header=list(columns),
                                      tag="items")
        self.writer.close()


def wandb_mode() -> str:
    """offline unless the user configured W&B (module docstring)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbLogger:
    """A W&B run (``wandb.init``) whose files live under ``out_dir/wandb``."""

    def __init__(self, out_dir: str | Path, *, name: str, config: dict | None = None,
                 mode: str | None = None):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "collapse-kit"), name=name,
                              dir=str(out_dir), config=config or {}, mode=mode or wandb_mode(),
                              reinit="finish_previous")

    def on_log(self, record: dict) -> None:
        stage = record.get("stage", "train")
        self.run.log({**scalars(record), f"{stage}/epoch": record["epoch"]})

    def finish(self, test: dict | None = None, *, table=None, ids=None, metadata=None) -> None:
        """Test metrics into the run summary (``test/<metric>``); the table is not uploaded
        (``collapse-kit export`` writes it in any format)."""
        for name, value in (test or {}).items():
            self.run.summary[f"test/{name}"] = float(value)
        self.run.finish()
