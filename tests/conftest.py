"""Shared fixtures: tiny synthetic datasets and paths to the shared reference material."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adrec.data import SequenceDataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The authors' ML-100K stage-1 checkpoint ships with the tests (fixtures/README.md), so no test
# that guards a README number about it can skip on a fresh clone without ../shared.
OFFICIAL_CKPT = ROOT / "tests" / "fixtures" / "official-ml-100k-pretrain.pth"
SHARED_OFFICIAL_CKPT = SHARED / "reference" / "checkpoints" / "official-ml-100k-pretrain.pth"
# ML-100K's genre labels, as bundled with probes/ (the copy the probes read)
GENRES = ROOT / "probes" / "data" / "ml-100k-genres.csv"


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
    assert OFFICIAL_CKPT.exists(), f"the test fixture {OFFICIAL_CKPT} is missing"
    return OFFICIAL_CKPT


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "guards_readme: the test checks a number the README states; it may not skip "
                   "(a skip fails the run, so CI cannot pass without checking it)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("guards_readme") is not None:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} guards a README number and may not skip "
                           f"(skipped: {reason})")
