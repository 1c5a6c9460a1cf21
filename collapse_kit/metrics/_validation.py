"""Input checks shared by the metric functions (validate first, fail with one clear line), and
the two numerical guards every metric shares: an exact power-of-two rescaling of tables whose
entries are far from 1, and column means that are exact for constant columns."""
from __future__ import annotations

import math
import numbers

import numpy as np

from collapse_kit.errors import UserError


def check_table(E, *, name: str = "E", min_rows: int = 2) -> np.ndarray:
    """Validate ``E`` as an embedding table (n_items, d) and return it as a numpy array, unconverted.

    Raises TypeError for non-float dtypes and UserError (a ValueError) for a wrong number of
    dimensions, too few rows, no columns, NaN/Inf entries, or a table of zeros only.
    Accepts numpy arrays and anything with ``.detach()`` (torch tensors) or ``__array__``.
    """
    if hasattr(E, "detach"):  # a torch tensor, converted without importing torch here
        E = E.detach().cpu()
        if str(E.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            E = E.float()
        E = E.numpy()
    arr = np.asarray(E)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point embeddings; got dtype {arr.dtype} "
            "(integer tensors are usually item ids, not an embedding table; pass the float table)")
    if arr.ndim != 2:
        raise UserError(
            f"{name} must be 2-D (n_items, d); got a {arr.ndim}-D array of shape {tuple(arr.shape)} "
            "(pick the item-embedding table itself, e.g. with another --key)")
    n, d = arr.shape
    if n < min_rows:
        raise UserError(f"{name} has {n} row(s); at least {min_rows} items are needed")
    if d < 1:
        raise UserError(f"{name} has no columns (shape {arr.shape}); d must be at least 1")
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        n_nan = int(np.isnan(arr).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise UserError(
            f"{name} contains {n_nan} NaN and {n_inf} Inf entries in {bad_rows.size} row(s) "
            f"(first: row {bad_rows[0]}); embeddings must be finite, so check the run that wrote them")
    if not arr.any():
        raise UserError(f"{name} is all zeros (shape {arr.shape}); there is no embedding to analyse")
    return arr


def as_table(E, *, name: str = "E", min_rows: int = 2) -> np.ndarray:
    """``check_table(E)`` as a C-contiguous float64 array (the precision every metric uses)."""
    return np.ascontiguousarray(check_table(E, name=name, min_rows=min_rows), dtype=np.float64)


# Tables whose largest |entry| lies in this range are used as they are (trained tables have their
# largest entries near 0.5 to 0.8). Others are multiplied by the power of two that brings it just
# inside: squares then neither overflow nor underflow (KMeans' float32 copy included: a 1e30
# table squared is inf in float32, a 1e-30 one is 0), and the authors' absolute epsilons (1e-9 in
# zscore, the 1e-9 covariance clip) weigh as they would for a table at the edge of the range, so
# every metric but the row norms is invariant to a global scale, as documented. Just inside, not
# to 1: a table a little outside the range is treated almost exactly like one a little inside.
UNSCALED_RANGE = (2.0**-6, 2.0**6)


def power_of_two_scaled(X: np.ndarray) -> tuple[np.ndarray, int]:
    """(X * 2**-k, k): X (n, d) float rescaled by an exact power of two, and its exponent k.

    k = 0 (X itself, not a copy) when the largest |entry| lies in ``UNSCALED_RANGE``; otherwise
    k is the exponent that brings it just inside: into [2^5, 2^6) from above, [2^-6, 2^-5) from
    below. Multiplying by a power of two only changes exponents, so no entry is rounded (only an
    entry some 1e300 times smaller than the largest could underflow) and scale-equivariant
    arithmetic gives the same bits. Undo with ``np.ldexp(value, k)`` for a value in the table's
    units (a norm).
    """
    top = max(float(X.max()), -float(X.min()))
    if top == 0 or UNSCALED_RANGE[0] <= top <= UNSCALED_RANGE[1]:
        return X, 0
    e = math.frexp(top)[1]  # top = m 2^e, m in [1/2, 1): top 2^-k lies in [2^(e-k-1), 2^(e-k))
    k = e - 6 if top > UNSCALED_RANGE[1] else e + 5  # into [2^5, 2^6), or into [2^-6, 2^-5)
    return np.ldexp(X, -k), k


def column_means(X: np.ndarray) -> np.ndarray:
    """Column means of X (n, d), (d,); exactly the column's value for a constant column.

    numpy's summation can miss the mean of n equal values by an ulp; the centred column would
    then hold values of about 1e-16 instead of exact zeros, and a table of identical rows would
    get a spectrum of rounding noise instead of none.
    """
    constant = X.max(axis=0) == X.min(axis=0)
    return np.where(constant, X[0], X.mean(axis=0))


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and non-integers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_optional_sample(value, name: str) -> int | None:
    """A sample size: None (use every item) or an int >= 2."""
    return None if value is None else check_positive_int(value, name, minimum=2)


def sample_rows(n: int, sample_size: int | None, random_state) -> np.ndarray | None:
    """Indices of a seeded sample of ``sample_size`` rows without replacement; None if all fit."""
    if sample_size is None or sample_size >= n:
        return None
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=sample_size, replace=False))
