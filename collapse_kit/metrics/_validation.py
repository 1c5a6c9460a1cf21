"""Input checks shared by the metric functions (validate first, fail with one clear line), and
the two numerical guards every metric shares: an exact power-of-two rescaling of tables whose
entries are far from 1, and column means that are exact for constant columns. ``ColumnStats``
and ``check_block`` give the same guards to a table streamed by blocks of rows."""
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
    arr = as_array(E)
    check_layout(arr.dtype, arr.shape, name=name, min_rows=min_rows)
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


def as_array(E) -> np.ndarray:
    """``E`` as a numpy array, unconverted and unchecked (torch tensors without importing torch;
    bfloat16, which numpy lacks, as float32)."""
    if hasattr(E, "detach"):  # a torch tensor, converted without importing torch here
        E = E.detach().cpu()
        if str(E.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            E = E.float()
        E = E.numpy()
    return np.asarray(E)


def check_layout(dtype: np.dtype, shape: tuple[int, ...], *, name: str = "E",
                 min_rows: int = 2) -> None:
    """The checks of ``check_table`` that need no data: a float dtype, 2-D, enough rows, d >= 1.

    Shared by ``check_table`` and the row-block sources (``collapse_kit.stream``), which know
    dtype and shape before reading a row.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(
            f"{name} must hold floating-point embeddings; got dtype {dtype} "
            "(integer tensors are usually item ids, not an embedding table; pass the float table)")
    if len(shape) != 2:
        raise UserError(
            f"{name} must be 2-D (n_items, d); got a {len(shape)}-D array of shape {tuple(shape)} "
            "(pick the item-embedding table itself, e.g. with another --key)")
    n, d = shape
    if n < min_rows:
        needed = "1 item is" if min_rows == 1 else f"{min_rows} items are"
        raise UserError(f"{name} has {n} row(s); at least {needed} needed")
    if d < 1:
        raise UserError(f"{name} has no columns (shape {tuple(shape)}); d must be at least 1")


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
    k = scale_exponent(max(float(X.max()), -float(X.min())))
    return (X, 0) if k == 0 else (np.ldexp(X, -k), k)


def scale_exponent(top: float) -> int:
    """The exponent k of ``power_of_two_scaled`` for a table whose largest |entry| is ``top``.

    0 for top = 0 or top in ``UNSCALED_RANGE``; never 0 outside it. Non-decreasing in top, so a
    streamed table can track it block by block (``ColumnStats``).
    """
    if top == 0 or UNSCALED_RANGE[0] <= top <= UNSCALED_RANGE[1]:
        return 0
    e = math.frexp(top)[1]  # top = m 2^e, m in [1/2, 1): top 2^-k lies in [2^(e-k-1), 2^(e-k))
    return e - 6 if top > UNSCALED_RANGE[1] else e + 5  # into [2^5, 2^6), or into [2^-6, 2^-5)


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


# -- streamed tables (collapse_kit.stream): the same guards, one block of rows at a time ----------

# Entries (rows x d) per block of a streamed table: 4M float64 = 32 MB (32,768 rows at d = 128).
STREAM_BLOCK_ENTRIES = 2**22


def stream_block_rows(d: int, block_rows: int | None = None) -> int:
    """Rows per block of a streamed table of d columns: ``block_rows``, else
    STREAM_BLOCK_ENTRIES / d."""
    if block_rows is None:
        return max(1, STREAM_BLOCK_ENTRIES // d)
    return check_positive_int(block_rows, "block_rows")


def check_block(block: np.ndarray, start: int, *, name: str = "E") -> None:
    """Refuse a block of rows start.. of a streamed table that holds NaN or Inf, naming the row.

    Rows are checked in order, so the row named is the table's first non-finite one.
    """
    finite = np.isfinite(block)
    if finite.all():
        return
    i = int(np.flatnonzero(~finite.all(axis=1))[0])
    n_nan = int(np.isnan(block[i]).sum())
    raise UserError(f"{name} has a non-finite row {start + i} ({n_nan} NaN and "
                    f"{int((~finite[i]).sum()) - n_nan} Inf entries; the first such row); "
                    "embeddings must be finite, so check the run that wrote them")


class ColumnStats:
    """Column statistics of a table fed block by block (pass 1 of every streamed metric).

    Holds, exactly as the whole table would give them: the column minima and maxima (so the
    ``power_of_two_scaled`` exponent and the constant columns), and the (weighted) row count,
    column means and sums of squared deviations (M2) of the table scaled by 2**-exponent,
    merged per block with Chan et al.'s pairwise update in float64. A block's rows may carry
    weights (a bootstrap resample: row i counted w_i times). Memory O(d).
    Reference: Chan, Golub & LeVeque, "Algorithms for computing the sample variance" (1983).
    """

    def __init__(self, d: int):
        self.count = 0.0                  # rows seen (sum of weights)
        self.lo = np.full(d, np.inf)      # column minima, in the table's own units
        self.hi = np.full(d, -np.inf)     # column maxima
        self.exponent = 0                 # scale_exponent of the largest |entry| so far
        self._mean = np.zeros(d)          # of the scaled table (units 2**exponent)
        self._m2 = np.zeros(d)            # sum of w (x - mean)^2, same units squared

    def update(self, block: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add the rows block (b, d) float64, optionally weighted by weights (b,) > 0."""
        if block.shape[0] == 0:
            return
        np.minimum(self.lo, block.min(axis=0), out=self.lo)
        np.maximum(self.hi, block.max(axis=0), out=self.hi)
        k = scale_exponent(max(float(self.hi.max()), -float(self.lo.min())))
        if k != self.exponent:  # k only grows: the earlier sums shrink by an exact power of two
            self._mean = np.ldexp(self._mean, self.exponent - k)
            self._m2 = np.ldexp(self._m2, 2 * (self.exponent - k))
            self.exponent = k
        Y = np.ldexp(block, -k) if k else block                              # (b, d)
        if weights is None:
            nb, mb = float(Y.shape[0]), Y.mean(axis=0)
            m2b = ((Y - mb) ** 2).sum(axis=0)
        else:
            nb = float(weights.sum())
            mb = (weights @ Y) / nb
            m2b = weights @ (Y - mb) ** 2
        total = self.count + nb
        delta = mb - self._mean  # 0 for a constant column: its mean stays exact
        self._mean = self._mean + delta * (nb / total)
        self._m2 = self._m2 + m2b + delta**2 * (self.count * nb / total)
        self.count = total

    @property
    def top(self) -> float:
        """The largest |entry| of the table."""
        return max(float(self.hi.max()), -float(self.lo.min()))

    def means(self) -> np.ndarray:
        """Column means of the scaled table, (d,); exactly the value of a constant column
        (as ``column_means``)."""
        constant = self.lo == self.hi
        return np.where(constant, np.ldexp(self.lo, -self.exponent), self._mean)

    def stds(self) -> np.ndarray:
        """Population (ddof 0) column stds of the scaled table, (d,)."""
        return np.sqrt(self._m2 / self.count)

    def n_constant_columns(self) -> int:
        return int((self.lo == self.hi).sum())

    def check_not_all_zeros(self, shape: tuple[int, int], *, name: str = "E") -> None:
        """``check_table``'s refusal of an all-zero table, once every block has been seen."""
        if self.top == 0:
            raise UserError(f"{name} is all zeros (shape {tuple(shape)}); there is no embedding "
                            "to analyse")
