"""What `collapse-kit train --model NAME` runs: a model's stages through the one trainer.

Single-stage models (sasrec, stage1, diffurec, dreamrec) run one ``train_stage``. Models that
define ``run_pipeline`` in their module (ADRec's three stages) provide their own sequence of
``train_stage`` calls; the trainer itself is the same for all.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from adrec.config import TrainConfig
from adrec.data import SequenceDataset
from adrec.models import build_model, model_class
from adrec.train import StageResult, seed_everything, train_stage


def train_model(name: str, dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, *,
                model_args: dict | None = None, resume: bool = False, progress: bool = True,
                callbacks=(), **pipeline_options) -> StageResult:
    """Train model ``name`` on ``dataset``; returns the result of its final (selected) stage."""
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
