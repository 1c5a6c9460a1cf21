"""Model registry: name -> class. Each model lives in its own file (see base.py for the contract).

The models are imported here, explicitly: a model whose module fails to import makes
``import adrec.models`` fail with that error, instead of dropping out of the registry (and out of
the shared contract tests) unnoticed.
"""
from __future__ import annotations

import dataclasses

from adrec.models.adrec import ADRec
from adrec.models.base import Recommender
from adrec.models.diffurec import DiffuRec
from adrec.models.dreamrec import DreamRec
from adrec.models.sasrec import SASRec
from adrec.models.stage1 import Stage1

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (SASRec, Stage1, ADRec, DiffuRec, DreamRec)}


def available_models() -> list[str]:
    """The registered model names, in registry order."""
    return list(MODELS)


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, n_items: int, args: dict | None = None) -> Recommender:
    """Build model ``name`` for ``n_items`` items with ``args`` overriding its Args defaults."""
    cls = model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Args)}
    unknown = set(args or {}) - fields
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for model {name!r}; "
                         f"valid: {sorted(fields)}")
    return cls(cls.Args(**(args or {})), n_items)
