"""Model registry: name -> class. Each model lives in its own file (see base.py for the contract)."""
from __future__ import annotations

import dataclasses
import importlib

from adrec.models.base import Recommender

_REGISTRY = {
    "sasrec": "adrec.models.sasrec:SASRec",
    "stage1": "adrec.models.stage1:Stage1",
    "adrec": "adrec.models.adrec:ADRec",
    "diffurec": "adrec.models.diffurec:DiffuRec",
    "dreamrec": "adrec.models.dreamrec:DreamRec",
}


def available_models() -> list[str]:
    out = []
    for name, target in _REGISTRY.items():
        try:
            importlib.import_module(target.split(":")[0])
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def model_class(name: str) -> type[Recommender]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    module, cls = _REGISTRY[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ValueError(f"model {name!r} is not available in this version; "
                             f"choose one of {', '.join(available_models())}") from None
        raise


def build_model(name: str, n_items: int, args: dict | None = None) -> Recommender:
    """Build model ``name`` for ``n_items`` items with ``args`` overriding its Args defaults."""
    cls = model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Args)}
    unknown = set(args or {}) - fields
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)} for model {name!r}; "
                         f"valid: {sorted(fields)}")
    return cls(cls.Args(**(args or {})), n_items)
