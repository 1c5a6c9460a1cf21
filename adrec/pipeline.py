"""What `collapse-kit train --model NAME` runs: a model's stages through the one trainer.

Single-stage models (sasrec, stage1, diffurec, dreamrec) run one ``train_stage``. Models that
define ``run_pipeline`` in their module (ADRec's three stages) provide their own sequence of
``train_stage`` calls; the trainer itself is the same for all.
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from adrec.config import TrainConfig
from adrec.data import SequenceDataset
from adrec.models import build_model, model_class
from adrec.train import StageResult, folder_lock, seed_everything, train_stage

log = logging.getLogger(__name__)


def train_model(name: str, dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, *,
                model_args: dict | None = None, resume: bool = False, progress: bool = True,
                callbacks=(), **pipeline_options) -> StageResult:
    """Train model ``name`` on ``dataset``; returns the result of its final (selected) stage.

    The run folder is locked for the whole run (a second trainer into it fails at once); under
    torchrun only rank 0, the one that writes, takes the lock. Temporary files left by a killed
    run are removed once the lock is held."""
    if int(os.environ.get("RANK", "0")) != 0:
        return _train_model(name, dataset, cfg, out_dir, model_args=model_args, resume=resume,
                            progress=progress, callbacks=callbacks, **pipeline_options)
    with folder_lock(out_dir):
        for stale in Path(out_dir).glob(".*.tmp"):
            log.info("removing %s, left by an interrupted write", stale)
            stale.unlink(missing_ok=True)
        return _train_model(name, dataset, cfg, out_dir, model_args=model_args, resume=resume,
                            progress=progress, callbacks=callbacks, **pipeline_options)


def _train_model(name, dataset, cfg, out_dir, *, model_args, resume, progress, callbacks,
                 **pipeline_options) -> StageResult:
    cls = model_class(name)
    module = importlib.import_module(cls.__module__)
    if hasattr(module, "run_pipeline"):
        return module.run_pipeline(dataset, cfg, out_dir, model_args=model_args or {},
                                   resume=resume, progress=progress, callbacks=callbacks,
                                   **pipeline_options)
    if pipeline_options:
        raise ValueError(f"options {sorted(pipeline_options)} do not apply to model {name!r}")
    seed_everything(cfg.seed)
    model = build_model(name, dataset.n_items, model_args)
    return train_stage(model, dataset, cfg, out_dir, stage=name, resume=resume,
                       progress=progress, callbacks=callbacks)
