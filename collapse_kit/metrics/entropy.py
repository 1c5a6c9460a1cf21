"""Spectral entropies of an item-embedding table E (n_items, d), as in the ADRec paper's Table 5.

Both are Shannon entropies in nats of a spectrum renormalised to sum 1, so their maximum is
ln(d) = 4.852 for d = 128, reached by a perfectly flat spectrum. Because a finite Gaussian table
does not have a flat spectrum, compare a value with the same-shape Gaussian null
(``collapse_kit.metrics.uncertainty.gaussian_null``), not with ln(d): for n_items/d near 8
(ML-100K) a Gaussian table gets 4.836 and 4.789, well below 4.852.
"""
from __future__ import annotations

import numpy as np

from collapse_kit.metrics.spectrum import as_spectra, covariance_eigenvalues

# The authors clip covariance eigenvalues at this floor before normalising.
EIGENVALUE_FLOOR = 1e-9


def shannon_entropy(weights) -> float:
    """Entropy in nats of non-negative ``weights`` renormalised to sum 1 (0 log 0 = 0).

    Matches ``scipy.stats.entropy(weights)``. Returns 0.0 when all weights are 0 (a spectrum
    with nothing in it has no spread), where scipy would return NaN.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total <= 0:
        return 0.0
    p = w[w > 0] / total
    return float(-(p * np.log(p)).sum())


def singular_value_entropy(E) -> float:
    """Paper (Table 5): entropy of the singular values of ``zscore(E)``, p_i = s_i / sum(s).

    Singular values, not their squares, as the authors use them. Range [0, ln min(n_items, d)];
    lower means the spectrum concentrates in fewer directions. Invariant to row permutations and
    to the scale of each column (it sees the standardised table), but not to rotations.
    Defined value: 0.0 if every column is constant.
    Reference: Li et al., ADRec (KDD 2025), Table 5.
    """
    return shannon_entropy(as_spectra(E).standardized)


def covariance_entropy(E) -> float:
    """Paper (Table 5): entropy of the eigenvalues of the covariance of the raw table E.

    Sigma = cov(E) (d x d, ddof 1, centred; not standardised); eigenvalues clipped at >= 1e-9 and
    renormalised. Range [0, ln d]; lower means the variance concentrates in fewer directions.
    Invariant to row permutations, rotations and global scale (up to the 1e-9 clip).
    Quirk kept from the authors: the clip turns a zero-variance table into a flat spectrum (ln d).
    Reference: Li et al., ADRec (KDD 2025), Table 5.
    """
    # Eigenvalues of np.cov(E) (d x d) are the centred singular values squared over n - 1.
    lam = covariance_eigenvalues(as_spectra(E), standardized=False)
    return shannon_entropy(np.clip(lam, EIGENVALUE_FLOOR, None))
