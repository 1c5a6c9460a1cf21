"""Shared fixtures: tiny synthetic datasets and paths to the shared reference material."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adrec.data import SequenceDataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OFFICIAL_CKPT = SHARED / "reference" / "checkpoints" / "official-ml-100k-pretrain.pth"


def make_dataset(n_users: int = 40, n_items: int = 30, *, min_len: int = 3, max_len: int = 25,
                 seed: int = 0, name: str = "tiny") -> SequenceDataset:
    """Random users with non-repeating items and a learnable pattern (item i tends to follow i-1)."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for _ in range(n_users):
        length = int(rng.integers(min_len, max_len + 1)) + 2
        start = int(rng.integers(1, n_items + 1))
        seq = [(start + k - 1) % n_items + 1 for k in range(min(length, n_items))]
        train.append(np.array(seq[:-2], dtype=np.int64))
        valid.append(seq[-2])
        test.append(seq[-1])
    return SequenceDataset(name=name, n_items=n_items, train=train,
                           valid=np.array(valid), test=np.array(test), fingerprint="tiny")


@pytest.fixture
def tiny():
    return make_dataset()


@pytest.fixture
def official_ckpt():
    if not OFFICIAL_CKPT.exists():
        pytest.skip(f"authors' checkpoint not found at {OFFICIAL_CKPT}")
    return OFFICIAL_CKPT
