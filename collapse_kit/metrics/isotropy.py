"""Isotropy of an item-embedding table E (n_items, d), as in the ADRec paper's Table 5."""
from __future__ import annotations

import numpy as np

from collapse_kit.errors import UndefinedMetric
from collapse_kit.metrics.spectrum import Spectra, as_spectra, covariance_eigenvalues

# The authors add this to the largest eigenvalue in the isotropy score's denominator.
ISOTROPY_EPS = 1e-9


def standardized_covariance_eigenvalues(E, *, metric: str = "this metric") -> np.ndarray:
    """The d eigenvalues (ascending) of S = cov(zscore(E)) (ddof 1), the matrix the authors use.

    S is essentially the correlation matrix. E is the table or its ``spectra(E)``. Raises
    UndefinedMetric (a UserError) when n_items <= d: S is then singular whatever the embeddings
    are, so the metrics built on it (isotropy, KL to a Gaussian) say nothing.
    """
    sp: Spectra = as_spectra(E)
    if sp.n_items <= sp.d:
        raise UndefinedMetric(
            f"{metric} needs more items than dimensions; got n_items={sp.n_items}, d={sp.d} (with "
            "n_items <= d the covariance is singular for any embedding); analyse a larger table")
    return covariance_eigenvalues(sp, standardized=True)


def isotropy(E) -> float:
    """Paper (Table 5): lambda_min / (lambda_max + 1e-9), lambda the eigenvalues of cov(zscore(E)).

    The authors' score, not Mu et al.'s partition-function isotropy. Range [0, 1]: 1 = perfectly
    isotropic (every direction carries the same variance), 0 = some direction carries none. It
    depends strongly on n_items/d: a same-shape Gaussian table gets only about 0.25 at 1008 x 128
    (the smallest eigenvalue of a finite sample is far below 1), so read it next to the Gaussian
    null. Invariant to row permutations and per-column scale, not to rotations.
    Defined value: about 0 when a column is constant. Needs n_items > d.
    Reference: Li et al., ADRec (KDD 2025), Table 5.
    """
    lam = standardized_covariance_eigenvalues(E, metric="isotropy")
    return float(lam[0] / (lam[-1] + ISOTROPY_EPS))
