"""Geometry of the rows of an item-embedding table E (n_items, d): norms, cosines, uniformity.

Nothing here builds an n_items x n_items matrix: the mean cosine comes from the mean of the
normalised rows, and uniformity sums pairwise terms in row blocks over a seeded sample.
``RowGeometry`` gives the norms and the mean cosine of a table streamed by blocks of rows.
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
        raise _too_few_directions(metric, keep.sum())
    return X[keep] / norms[keep, None]


def row_norm_stats(E) -> dict[str, float]:
    """Euclidean norms of the rows: ``mean``, ``std`` (ddof 0), ``min``, ``max`` and ``n_zero_rows``.

    Scale reading: the paper's t-SNE figures argue that ADRec "expands" the space; the mean norm
    measures that directly. Range [0, inf); invariant to row permutations and rotations.
    """
    X, exponent = power_of_two_scaled(as_table(E))
    norms = np.linalg.norm(X, axis=1)  # (n,), in units of 2**exponent
    return _norm_stats(norms.mean(), norms.std(), norms.min(), norms.max(), exponent,
                       int((norms == 0).sum()))


def _norm_stats(mean, std, lo, hi, exponent: int, n_zero: int) -> dict[str, float]:
    """``row_norm_stats``' dict from the norms' statistics in units of 2**exponent."""
    if lo == hi:  # all norms equal: exactly that mean and no spread (numpy's sum can miss by ulps)
        stats = {"mean": lo, "std": 0.0, "min": lo, "max": hi}
    else:
        stats = {"mean": mean, "std": std, "min": lo, "max": hi}
    with np.errstate(over="ignore"):  # a statistic above 1.8e308 is inf in float64, honestly
        out = {k: float(np.ldexp(v, exponent)) for k, v in stats.items()}
    return {**out, "n_zero_rows": n_zero}


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
    return _mean_cosine(U.mean(axis=0), U.shape[0])


def _mean_cosine(m: np.ndarray, n) -> float:
    """Mean cosine over the pairs i != j of n unit rows whose mean is m (d,)."""
    return float((n * n * (m @ m) - n) / (n * (n - 1)))


def _too_few_directions(metric: str, count) -> UndefinedMetric:
    return UndefinedMetric(f"{metric} needs at least 2 rows of non-zero norm (directions to "
                           f"compare); got {int(count)}")


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


class RowGeometry:
    """Row norms and the mean of the unit rows of a table fed block by block (streamed).

    What ``row_norm_stats`` and ``mean_cosine_similarity`` need, as running sums: the norms'
    count, mean and M2 (Chan et al.'s pairwise merge), minimum, maximum and zeros, and the sum
    of the unit rows u_i = e_i / |e_i| with their count. Both metrics are exact from these sums
    (no sampling). Blocks come scaled by 2**-exponent (the whole table's, ``ColumnStats``), and
    may carry weights w_i > 0 (a bootstrap resample: row i counted w_i times). Memory O(d).
    """

    def __init__(self, d: int, exponent: int):
        self.exponent = exponent
        self.count = 0.0                   # rows (sum of weights)
        self.n_zero = 0.0                  # rows of norm 0
        self._mean = 0.0                   # of the norms, units 2**exponent
        self._m2 = 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.unit_sum = np.zeros(d)        # sum of w_i u_i over rows of non-zero norm
        self.n_unit = 0.0                  # their count

    def update(self, Y: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add the scaled rows Y (b, d), optionally weighted by ``weights`` (b,) > 0."""
        if Y.shape[0] == 0:
            return
        norms = np.linalg.norm(Y, axis=1)                                  # (b,)
        w = np.ones_like(norms) if weights is None else weights
        nb = float(w.sum())
        mb = float(w @ norms) / nb
        m2b = float(w @ (norms - mb) ** 2)
        total = self.count + nb
        delta = mb - self._mean
        self._mean += delta * (nb / total)
        self._m2 += m2b + delta**2 * (self.count * nb / total)
        self.count = total
        self.lo, self.hi = min(self.lo, float(norms.min())), max(self.hi, float(norms.max()))
        keep = norms > 0
        if keep.all():  # the usual case: no copy of Y
            self.n_unit += nb
            self.unit_sum += (w / norms) @ Y
        else:
            self.n_zero += float(w[~keep].sum())
            self.n_unit += float(w[keep].sum())
            self.unit_sum += (w[keep] / norms[keep]) @ Y[keep]

    def norm_stats(self) -> dict[str, float]:
        """As ``row_norm_stats`` of the whole table."""
        return _norm_stats(self._mean, math.sqrt(self._m2 / self.count), self.lo, self.hi,
                           self.exponent, int(self.n_zero))

    def mean_cosine(self) -> float:
        """As ``mean_cosine_similarity`` of the whole table (UndefinedMetric below 2 directions)."""
        if self.n_unit < 2:
            raise _too_few_directions("mean_cosine_similarity", self.n_unit)
        return _mean_cosine(self.unit_sum / self.n_unit, self.n_unit)
