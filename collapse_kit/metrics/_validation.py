"""Input checks shared by the metric functions: validate first, fail with one clear line."""
from __future__ import annotations

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
