"""Singular-value spectrum of an item-embedding table E of shape (n_items, d).

Two families live here:

* the ADRec paper's Table 5 spectrum metrics (``top_singular_values``, ``singular_value_variance``),
  computed exactly as the authors' notebook does: on the column-standardised table ``zscore(E)``;
* spectrum metrics from the representation-collapse literature (``effective_rank``,
  ``information_abundance``, ``numerical_rank``, ``power_law_decay``), computed on the table as
  it is (``power_law_decay``: on its covariance), as their references define them.

Everything is computed in float64, whatever the input precision, on the table rescaled by an
exact power of two when its entries are far from 1 (``power_of_two_scaled``), so every metric
here is invariant to a global scale. Each spectral metric takes the table E (n_items, d) or its
precomputed ``spectra(E)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics._threads import small_table_threads
from collapse_kit.metrics._validation import (
    ColumnStats, as_table, check_block, check_layout, check_positive_int, column_means,
    power_of_two_scaled, stream_block_rows)

# The authors' z-score adds this to the column std so that constant columns do not divide by 0.
ZSCORE_EPS = 1e-9


def zscore(E) -> np.ndarray:
    """Column-standardised table, as in the authors' notebook: (E - mean) / (std + 1e-9).

    ``std`` is the population std (ddof 0). A constant column becomes a column of exact zeros
    instead of NaN. E is first rescaled by an exact power of two if its entries are far from 1
    (``power_of_two_scaled``), so that the 1e-9 stays negligible next to ordinary column stds and
    zscore(c E) = zscore(E) to about 1e-9 / std relative; a column whose std is tiny next to the
    table's largest entry still feels the epsilon (std 0.004: a few 1e-7 relative).
    Returns float64, shape (n_items, d).
    """
    X, _ = power_of_two_scaled(as_table(E))
    return (X - column_means(X)) / (X.std(axis=0) + ZSCORE_EPS)


def singular_values(E, *, standardize: bool = False, center: bool = False) -> np.ndarray:
    """All min(n_items, d) singular values of E, largest first (float64).

    ``standardize=True`` takes them of ``zscore(E)`` (the paper's convention); ``center=True``
    subtracts the column means first (the spectrum of the covariance); neither: E as it is.
    """
    X = zscore(E) if standardize else as_table(E)
    if center and not standardize:
        X = X - column_means(X)
    # Thin SVD without vectors: O(n d^2) time and O(n d) memory, never n x n.
    return np.linalg.svd(X, compute_uv=False)


class Spectra(NamedTuple):
    """The three spectra of a table E (n_items, d) that the spectral metrics read.

    Every spectral metric accepts either E or ``spectra(E)``; passing the latter lets several
    metrics share three SVDs instead of recomputing them (what ``collapse_kit.analyze`` does).
    ``raw`` and ``centered`` are those of E * 2**-scale_exponent (``power_of_two_scaled``; the
    exponent is 0 for any table whose largest entry lies in [2^-6, 2^6]); multiply by
    2**scale_exponent for E's own units. The metrics read only their ratios, or apply the
    authors' absolute epsilons there, which is what makes them scale-invariant.
    """

    raw: np.ndarray           # singular values of E as it is, largest first
    centered: np.ndarray      # of E - column means: covariance eigenvalues are centered**2/(n-1)
    standardized: np.ndarray  # of zscore(E): eigenvalues of cov(zscore(E)) are standardized**2/(n-1)
    n_items: int
    d: int
    scale_exponent: int = 0   # raw and centered are of E * 2**-scale_exponent


# Rows per block of the blocked QR in ``spectra``: a 2048 x d block stays in cache.
QR_BLOCK_ROWS = 2048


def _centered_r_factor(X: np.ndarray, mean: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """R (min(n, d) x d) of a QR factorisation of X - mean, by blocks of rows (TSQR).

    Each block's R comes from a Householder QR, and the stacked Rs are factorised again: as
    accurate as one QR of the whole table, about 2.5x faster on a tall table, and it never holds
    a centred copy of X (memory O(QR_BLOCK_ROWS * d + n/QR_BLOCK_ROWS * d^2)). With ``weights``
    (n,) the rows are sqrt(w_i) (x_i - mean): the R of the table with row i repeated w_i times.
    """
    def centred(i):
        C = X[i:i + QR_BLOCK_ROWS] - mean                                   # (<= 2048, d)
        return C if weights is None else C * np.sqrt(weights[i:i + QR_BLOCK_ROWS])[:, None]

    blocks = [np.linalg.qr(centred(i), mode="r") for i in range(0, X.shape[0], QR_BLOCK_ROWS)]
    return blocks[0] if len(blocks) == 1 else np.linalg.qr(np.vstack(blocks), mode="r")


def _spectra_from_r(R: np.ndarray, mean: np.ndarray, std: np.ndarray, n: int,
                    exponent: int) -> Spectra:
    """The three spectra of a table X (n, d), already scaled by 2**-exponent, from the R factor
    of X - mean (``spectra``'s derivation), its column means and its column stds (ddof 0)."""
    d = R.shape[1]
    k = min(n, d)
    M = np.vstack([R, np.sqrt(n) * mean])                                   # (<= d + 1, d)

    def svals(A):
        return np.linalg.svd(A, compute_uv=False)

    return Spectra(raw=svals(M)[:k], centered=_pad(svals(R), k),
                   standardized=_pad(svals(R / (std + ZSCORE_EPS)), k), n_items=n, d=d,
                   scale_exponent=exponent)


def spectra(E) -> Spectra:
    """Compute the three spectra of E at once, from one blocked QR of the centred table.

    With X - mean = Q R (Q orthonormal, R small):
    * centred: the singular values of R;
    * standardised: zscore(E) = (X - mean) D^-1, D = diag(std + 1e-9), so those of R D^-1;
    * raw: X^T X = R^T R + n mean mean^T (the centred columns sum to 0), which is M^T M for
      M = [R; sqrt(n) mean^T], so those of M.
    Each equality is exact in exact arithmetic and uses only orthogonal transforms, so small
    singular values stay accurate (unlike a Gram-matrix eigen-decomposition). O(n d^2) time,
    O(n d) memory for the float64 table, never n x n. ``spectra_streamed`` does the same from
    blocks of rows, in memory O(block * d).
    """
    X, exponent = power_of_two_scaled(as_table(E))
    n, d = X.shape
    with small_table_threads(QR_BLOCK_ROWS * d):  # the QRs are small whatever n is
        mean = column_means(X)  # constant columns centre to exact zeros
        R = _centered_r_factor(X, mean)                                    # (<= d, d)
        return _spectra_from_r(R, mean, X.std(axis=0), n, exponent)


class CenteredRFactor:
    """The R factor of X - mean for a table X fed block by block (pass 2 of ``spectra_streamed``).

    After every block, R <- qr([R; R_block]) with R_block the TSQR factor of the block's centred
    rows (``_centered_r_factor``): the R of all rows seen so far, up to signs, by orthogonal
    transforms only (Demmel et al.'s TSQR, applied as a running reduction). Memory O(d^2).
    ``mean`` (d,) is the whole table's (pass 1); blocks come already scaled by 2**-exponent.
    Reference: Demmel, Grigori, Hoemmen & Langou, "Communication-optimal parallel and
    sequential QR and LU factorizations" (SIAM J. Sci. Comput. 2012).
    """

    def __init__(self, mean: np.ndarray, *, device=None):
        self.mean = mean
        self.R = np.zeros((0, mean.size))                                  # (<= d, d)
        self.device = device
        if device is not None:  # the QRs in torch, float64, on that device (e.g. "cuda")
            import torch

            self._torch = torch
            self._mean = torch.as_tensor(mean, dtype=torch.float64, device=device)
            self._R = None

    def update(self, Y: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add the scaled rows Y (b, d), optionally repeated ``weights`` (b,) times each."""
        if Y.shape[0] == 0:
            return
        if self.device is not None:
            return self._update_torch(Y, weights)
        R_block = _centered_r_factor(Y, self.mean, weights)               # (<= d, d)
        if self.R.shape[0]:
            self.R = np.linalg.qr(np.vstack([self.R, R_block]), mode="r")
        else:
            self.R = R_block

    def _update_torch(self, Y: np.ndarray, weights: np.ndarray | None) -> None:
        """The same reduction in torch: the block's centred rows to the device, one QR there
        (a GPU factors a whole block at once), then R <- qr([R; R_block])."""
        torch = self._torch
        C = torch.as_tensor(Y, dtype=torch.float64).to(self.device) - self._mean
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64).to(self.device)
            C = C * torch.sqrt(w)[:, None]
        R_block = torch.linalg.qr(C, mode="r").R
        self._R = R_block if self._R is None else \
            torch.linalg.qr(torch.cat([self._R, R_block]), mode="r").R

    def spectra(self, std: np.ndarray, n: int, exponent: int) -> Spectra:
        """The spectra of the table fed so far: its n rows, column stds (ddof 0) and exponent
        (the scale ``power_of_two_scaled`` chose, from ``ColumnStats``)."""
        if self.device is not None and self._R is not None:
            self.R = self._R.cpu().numpy()
        return _spectra_from_r(self.R, self.mean, std, n, exponent)


def spectra_streamed(source, *, block_rows: int | None = None) -> Spectra:
    """``spectra`` of a table read block by block from a row-block source, never whole.

    ``source`` is a ``collapse_kit.stream`` source (anything with ``shape``, ``dtype`` and
    ``iter_blocks(block_rows)`` yielding float64 row blocks). Two passes: the column minima,
    maxima, means and stds (``ColumnStats``: the same power-of-two exponent and exact constant-
    column means as ``power_of_two_scaled`` and ``column_means`` on the whole table), then the R
    factor of the centred table (``CenteredRFactor``); the spectra follow from R as in
    ``spectra``. Agrees with ``spectra`` up to rounding (summation order), 1e-12 relative in the
    tests. Memory O(block_rows * d + d^2); ``block_rows`` default STREAM_BLOCK_ENTRIES / d.
    Validates like ``as_table``: a NaN/Inf is reported with its row.
    """
    n, d = source.shape
    name = getattr(source, "name", "E")
    check_layout(source.dtype, source.shape, name=name)
    rows = stream_block_rows(d, block_rows)
    with small_table_threads(QR_BLOCK_ROWS * d):
        stats = ColumnStats(d)
        start = 0
        for block in source.iter_blocks(rows):                             # pass 1
            check_block(block, start, name=name)
            stats.update(block)
            start += block.shape[0]
        stats.check_not_all_zeros((n, d), name=name)
        k = stats.exponent
        acc = CenteredRFactor(stats.means())
        for block in source.iter_blocks(rows):                             # pass 2
            acc.update(np.ldexp(block, -k) if k else block)
        return acc.spectra(stats.stds(), n, k)


def _pad(s: np.ndarray, k: int) -> np.ndarray:
    """``s`` cut or zero-padded to length k (R has fewer rows than d when n_items < d)."""
    out = np.zeros(k)
    out[: min(k, s.size)] = s[:k]
    return out


def as_spectra(E) -> Spectra:
    """``E`` itself if it is already a ``Spectra``, else ``spectra(E)``."""
    return E if isinstance(E, Spectra) else spectra(E)


def covariance_eigenvalues(sp: Spectra, *, standardized: bool) -> np.ndarray:
    """All d eigenvalues (ascending) of cov(E), or of cov(zscore(E)), ddof 1, from the spectra.

    When n_items <= d the missing eigenvalues are exact zeros (the centred table has rank < n).
    """
    s = sp.standardized if standardized else sp.centered
    lam = np.zeros(sp.d)
    lam[: s.size] = s**2 / (sp.n_items - 1)
    return np.sort(lam)


def top_singular_values(E, k: int = 5) -> np.ndarray:
    """Paper (Table 5): the ``k`` largest singular values of ``zscore(E)``, raw.

    Not divided by sqrt(n_items) and not squared, as the authors report them, so they grow like
    sqrt(n_items): a same-shape standard Gaussian table gives about sqrt(n_items) + sqrt(d)
    (about 42 for ML-100K's 1008 x 128). Range [0, sqrt(n_items * d)]; a large first value
    relative to the rest means one direction dominates.
    Reference: Li et al., ADRec (KDD 2025), Table 5.
    """
    k = check_positive_int(k, "k")
    sp = as_spectra(E)
    if k > sp.standardized.size:
        raise UserError(f"k={k} exceeds the {sp.standardized.size} singular values of a "
                        f"{sp.n_items} x {sp.d} table")
    return sp.standardized[:k].copy()


def singular_value_variance(E) -> float:
    """Paper (Table 5): population variance (ddof 0) of all singular values of ``zscore(E)``.

    Range [0, inf); it scales with n_items like the values themselves (about 31.6 for a
    1008 x 128 Gaussian table). Higher: a more uneven spectrum.
    Reference: Li et al., ADRec (KDD 2025), Table 5.
    """
    return float(np.var(as_spectra(E).standardized))


def effective_rank(E) -> float:
    """Effective rank exp(H(p)), p_i = s_i / sum(s), from the singular values of E as it is.

    H is the Shannon entropy in nats. Range [1, min(n_items, d)]: 1 for a rank-1 table,
    min(n_items, d) for a perfectly flat spectrum. Lower means more collapsed. Scale-free and
    invariant to row permutations and to rotations of the embedding space.
    References: Roy & Vetterli, "The effective rank" (EUSIPCO 2007); Garrido et al., RankMe
    (ICML 2023).
    """
    s = as_spectra(E).raw
    p = s / s.sum()
    p = p[p > 0]  # 0 log 0 = 0
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(E) -> float:
    """Information abundance sum(s) / max(s) of the singular values of E as it is.

    Range [1, min(n_items, d)]: 1 when one direction carries everything, min(n_items, d) for a
    flat spectrum. Lower means more collapsed. Scale-free, rotation- and permutation-invariant.
    Reference: Guo et al., "On the Embedding Collapse When Scaling Up Recommendation Models"
    (ICML 2024).
    """
    s = as_spectra(E).raw
    return float(s.sum() / s[0])


def numerical_rank(E, *, rtol: float | None = None) -> int:
    """Number of singular values of E (as it is) above ``rtol * max(s)``.

    Default ``rtol = max(n_items, d) * eps(float64)``, numpy's ``matrix_rank`` rule. Range
    [1, min(n_items, d)]; below min(n_items, d) means exactly dependent directions (dead
    dimensions, duplicated columns).
    """
    sp = as_spectra(E)
    s = sp.raw
    if rtol is None:
        rtol = max(sp.n_items, sp.d) * np.finfo(np.float64).eps
    elif not (isinstance(rtol, (int, float)) and 0 <= rtol < 1):
        raise UserError(f"rtol must be a number in [0, 1); got {rtol!r}")
    return int((s > rtol * s[0]).sum())


def power_law_decay(E) -> tuple[float, float]:
    """Power-law decay exponent alpha of the covariance eigenspectrum, and the fit's R^2.

    lambda_i = s_i^2 / (n_items - 1) are the eigenvalues of the covariance of E (s: singular
    values of the centred table). Fits log(lambda_i) = c - alpha * log(i) by least squares over
    the numerically non-zero eigenvalues (i = 1..k). Returns (alpha, r2).

    Reading: alpha near 1 is the healthy regime reported for good representations; larger alpha
    means faster decay (fewer effective directions, collapse); alpha near 0 means a flat,
    noise-like spectrum (a Gaussian table gives a small alpha). r2 in [0, 1] says how well a
    power law describes the spectrum at all. Scale-free and rotation-invariant.
    Defined values: with only one non-zero eigenvalue, alpha = +inf and r2 = 1 (the steepest
    possible decay); with two, the line passes through both points and r2 = 1 trivially.
    Undefined (UndefinedMetric) when every row is the same point: the covariance is zero, so
    there is no spectrum to decay.
    Reference: Agrawal et al., "alpha-ReQ: Assessing Representation Quality ... by Eigenspectrum
    Decay" (NeurIPS 2022).
    """
    sp = as_spectra(E)
    s = sp.centered
    # Same tolerance as numerical_rank, on the singular values (not their squares).
    keep = s > max(sp.n_items, sp.d) * np.finfo(np.float64).eps * s[0]
    lam = s[keep] ** 2 / (sp.n_items - 1)
    if lam.size == 0:
        raise UndefinedMetric("power_law_decay needs a non-zero covariance eigenvalue; every row "
                              "of the table is the same point, so its covariance is zero")
    if lam.size < 2:
        return math.inf, 1.0
    x = np.log(np.arange(1, lam.size + 1))
    y = np.log(lam)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_tot = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / ss_tot if ss_tot > 0 else 1.0
    return float(-slope), float(r2)


def stable_rank(E) -> float:
    """Stable rank ||E||_F^2 / sigma_1^2 = sum(s_i^2) / s_1^2, s the singular values of E as it is.

    Range [1, min(n_items, d)]: 1 for a rank-one table (complete collapse, or one dominant
    direction), min(n_items, d) for a flat spectrum. Unlike the numerical rank it does not jump
    with tiny singular values; it weighs directions by their energy, so one strong direction
    (e.g. popularity) pulls it towards 1. Scale-free, rotation- and permutation-invariant.
    (An all-zero table is refused as input, like everywhere in ``collapse_kit.metrics``.)
    Reference: Rudelson & Vershynin, "Sampling from large matrices" (J. ACM 2007).
    """
    s = as_spectra(E).raw
    if s[0] == 0:
        raise UndefinedMetric("stable_rank is undefined for an all-zero table (sigma_1 = 0)")
    return float((s**2).sum() / s[0] ** 2)


def participation_ratio(E) -> float:
    """Participation ratio (sum lambda_i)^2 / sum lambda_i^2 of the covariance eigenvalues.

    lambda_i are the eigenvalues of cov(E) (the centred table's s_i^2 / (n_items - 1)). Range
    [1, min(n_items - 1, d)]: 1 when one direction carries all the variance, d for isotropic
    variance. The usual "effective dimensionality" of neural representations; like the stable
    rank but of the centred table, so a shared offset does not count. Scale-free.
    Undefined when every row is the same point (zero covariance).
    Reference: Gao et al., "A theory of multineuronal dimensionality..." (bioRxiv 2017);
    Recanatesi et al., "Dimensionality compression and expansion in deep neural networks" (2019).
    """
    lam = as_spectra(E).centered ** 2
    if lam.sum() == 0:
        raise UndefinedMetric("participation_ratio is undefined when every row is the same "
                              "point: the covariance is zero")
    return float(lam.sum() ** 2 / (lam**2).sum())
