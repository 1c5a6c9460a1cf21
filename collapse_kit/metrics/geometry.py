"""Geometry of the rows of an item-embedding table E (n_items, d): norms, cosines, uniformity.

Nothing here builds an n_items x n_items matrix: the mean cosine comes from the mean of the
normalised rows, and uniformity sums pairwise terms in row blocks over a seeded sample.
Rows of norm 0 have no direction; the cosine-based metrics leave them out (``n_zero_rows`` in
``row_norm_stats`` counts them). Norms are taken of the table rescaled by an exact power of two
(``power_of_two_scaled``), so that no square overflows or underflows.
"""
from __future__ import annotations

import math

import numpy as np

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics._validation import (
    as_table, check_optional_sample, power_of_two_scaled, sample_rows)

DEFAULT_SAMPLE_SIZE = 10_000
# Row block for pairwise sums: BLOCK_ROWS x m float64 products (64 MB at m = 10,000).
BLOCK_ROWS = 800


def _unit_rows(X: np.ndarray, *, metric: str) -> np.ndarray:
    """Rows of X scaled to norm 1, zero rows dropped; shape (n_nonzero, d)."""
    X, _ = power_of_two_scaled(X)
    norms = np.linalg.norm(X, axis=1)
    keep = norms > 0
    if keep.sum() < 2:
        raise UndefinedMetric(f"{metric} needs at least 2 rows of non-zero norm (directions to "
                              f"compare); got {int(keep.sum())}")
    return X[keep] / norms[keep, None]


def row_norm_stats(E) -> dict[str, float]:
    """Euclidean norms of the rows: ``mean``, ``std`` (ddof 0), ``min``, ``max`` and ``n_zero_rows``.

    Scale reading: the paper's t-SNE figures argue that ADRec "expands" the space; the mean norm
    measures that directly. Range [0, inf); invariant to row permutations and rotations.
    """
    X, exponent = power_of_two_scaled(as_table(E))
    norms = np.linalg.norm(X, axis=1)  # (n,), in units of 2**exponent
    lo, hi = norms.min(), norms.max()
    if lo == hi:  # all norms equal: exactly that mean and no spread (numpy's sum can miss by ulps)
        stats = {"mean": lo, "std": 0.0, "min": lo, "max": hi}
    else:
        stats = {"mean": norms.mean(), "std": norms.std(), "min": lo, "max": hi}
    with np.errstate(over="ignore"):  # a statistic above 1.8e308 is inf in float64, honestly
        out = {k: float(np.ldexp(v, exponent)) for k, v in stats.items()}
    return {**out, "n_zero_rows": int((norms == 0).sum())}


def mean_cosine_similarity(E) -> float:
    """Mean cosine similarity over all pairs of distinct rows (i != j).

    With u_i = e_i / |e_i| and m = mean_i u_i over n rows, sum_{i,j} u_i . u_j = n^2 |m|^2, so
    the off-diagonal mean is (n^2 |m|^2 - n) / (n (n - 1)): exact, O(n d), no n x n matrix.
    (The authors' notebook averages the full matrix, diagonal included, which is |m|^2.)
    Range [-1/(n-1), 1]: 0 for directions spread evenly, 1 when every row points the same way
    (a common offset shared by all items, a classic form of anisotropy). Invariant to row
    permutations, rotations and row scaling.
    Reference: Ethayarajh (EMNLP 2019) uses the same average cosine as an anisotropy measure.
    """
    U = _unit_rows(as_table(E), metric="mean_cosine_similarity")
    n = U.shape[0]
    m = U.mean(axis=0)
    return float((n * n * (m @ m) - n) / (n * (n - 1)))


def uniformity(E, *, t: float = 2.0, sample_size: int | None = DEFAULT_SAMPLE_SIZE,
               random_state=0) -> float:
    """Uniformity log mean_{i<j} exp(-t |u_i - u_j|^2) of the normalised rows u_i = e_i / |e_i|.

    Over all pairs of distinct rows, or, above ``sample_size`` rows, over all pairs of a seeded
    sample drawn without replacement (``None``: never sample). Computed in row blocks
    (|u_i - u_j|^2 = 2 - 2 u_i . u_j), memory O(BLOCK_ROWS * m), time O(m^2 d). Range [-4t, 0]: lower is more
    uniform on the sphere; 0 means every row points the same way (complete collapse).
    Invariant to row permutations, rotations and row scaling.
    Reference: Wang & Isola, "Understanding Contrastive Representation Learning through Alignment
    and Uniformity on the Hypersphere" (ICML 2020), t = 2.
    """
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise UserError(f"t must be a positive number; got {t!r}")
    X = as_table(E)
    sample_size = check_optional_sample(sample_size, "sample_size")
    idx = sample_rows(X.shape[0], sample_size, random_state)
    U = _unit_rows(X if idx is None else X[idx], metric="uniformity")  # (m, d)
    m = U.shape[0]
    total = 0.0
    for start in range(0, m - 1, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, m)
        block = U[start:stop]                                  # (b, d)
        diag = _pair_kernel(block @ block.T, t)                # (b, b): pairs inside the block
        total += np.triu(diag, k=1).sum()                      # each pair i < j once
        if stop < m:
            total += _pair_kernel(block @ U[stop:].T, t).sum()  # (b, m - stop): all pairs
    n_pairs = m * (m - 1) / 2
    return float(math.log(total / n_pairs))


def _pair_kernel(G: np.ndarray, t: float) -> np.ndarray:
    """exp(-t |u_i - u_j|^2) from cosines G, in place: |u_i - u_j|^2 = 2 - 2 G (clipped >= 0)."""
    G *= 2.0 * t
    G -= 2.0 * t
    np.minimum(G, 0.0, out=G)
    return np.exp(G, out=G)
