"""The model contract shared by every recommender (checked by tests/test_model_contract.py).

A model is an ``nn.Module`` built as ``Model(args, n_items)`` from its own ``Args`` dataclass and
implements:

* ``loss(batch) -> dict[str, Tensor]``: scalar losses; ``"loss"`` is the one back-propagated,
  the others (e.g. ``"ce"``, ``"mse"``) are logged.
* ``represent(history, generator=None) -> Tensor (B, D)``: the sequence representation of each
  history, the vector whose dot product with the item table ranks the next item (SASRec: the
  last position's hidden state; diffusion models: the sampled x_0). ``generator`` seeds any
  sampling noise (diffusion models), so evaluation is reproducible.
* ``score_all(history, generator=None) -> Tensor (B, n_items + 1)``: a score for every embedding
  row, padding row 0 included (the evaluation protocol decides whether row 0 competes); by
  default ``represent(history, generator) @ item_embedding.weight.T``.
* ``item_embeddings() -> Tensor (n_items, D)``: the item table without the padding row.
* ``embedding_parameters()``: the parameters that make up the item table (for freezing).

Class attributes: ``name`` (registry key), ``Args`` (dataclass; saved in checkpoints),
``train_samples`` (``"sequence"``: one teacher-forced sample per user, or ``"prefixes"``) and
``cpu_bf16`` (whether ``matmul_precision="auto"`` trains it with bfloat16 products on a CPU with
bfloat16 units, ``config.resolve_matmul_precision``: True only where that was measured to be
faster and its accuracy was checked; False, the default, trains in float32 there).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn

from adrec.data import Batch


class Recommender(nn.Module):
    name: ClassVar[str] = ""
    Args: ClassVar[type]
    train_samples: ClassVar[str] = "sequence"
    cpu_bf16: ClassVar[bool] = False

    def __init__(self, args, n_items: int):
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        check_common_args(args)
        self.args, self.n_items = args, n_items

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``loss(batch)``: the call DistributedDataParallel wraps (it hooks ``forward``)."""
        return self.loss(batch)

    def represent(self, history: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, history: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        return self.represent(history, generator) @ self.item_embedding.weight.T  # (B, N+1)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_embedding.weight[1:].detach()

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.item_embedding.weight]

    @property
    def needs_full_width(self) -> bool:
        """True when outputs depend on left padding (official mask): batches are not trimmed."""
        return getattr(self.args, "attention_mask", "correct") == "official"


POSITIVE_INTS = ("hidden", "n_blocks", "n_heads", "max_len", "steps")


def check_common_args(args) -> None:
    """The checks every model's Args share: sizes >= 1, hidden divisible by n_heads, floats
    finite, dropouts in [0, 1), init standard deviations > 0 (ValueError naming the key)."""
    values = dataclasses.asdict(args)
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value}: expected a finite number")
    for key in POSITIVE_INTS:
        if key in values and values[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {values[key]}")
    if "hidden" in values and "n_heads" in values and values["hidden"] % values["n_heads"]:
        raise ValueError(f"hidden={values['hidden']} must be divisible by "
                         f"n_heads={values['n_heads']}")
    for key in ("dropout", "emb_dropout"):
        if key in values and not 0.0 <= values[key] < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {values[key]}")
    for key, value in values.items():
        if key.endswith("init_std") and value <= 0:
            raise ValueError(f"{key} must be > 0, got {value}")


def padded_item_embedding(n_items: int, hidden: int, init_std: float) -> nn.Embedding:
    """The diffusion baselines' item table (DiffuRec, DreamRec; official-implementation.md 4.2,
    4.3): rows 1..n_items ~ N(0, init_std), row 0 (padding) all zeros and never updated."""
    table = nn.Embedding(n_items + 1, hidden, padding_idx=0)
    nn.init.normal_(table.weight, std=init_std)
    with torch.no_grad():
        table.weight[0].zero_()
    return table
