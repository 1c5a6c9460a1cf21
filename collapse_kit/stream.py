"""Row-block sources: an item-embedding table (n_items, d) read one block of rows at a time.

A table of millions of items does not fit in memory as float64 (10^7 x 128 is 10 GB), so
``collapse_kit.analyze.analyze(..., stream=True)`` computes every metric from blocks of rows
(docs/metrics.md, "Tables of millions of items"). A source has

* ``shape`` (n_items, d), ``dtype`` (as stored) and ``name`` (for messages);
* ``iter_blocks(block_rows)``: every row in order, as float64 blocks of at most block_rows rows
  (each call starts again at row 0);
* ``take(rows)``: the given rows, float64 (len(rows), d); ``read_all()``: the whole table.

Three kinds: ``ArraySource`` (an array in memory), ``FileRowsSource`` (a .npy array or a
safetensors tensor read with explicit file reads: resident memory stays about one block, where a
memory map would count every page it touched as resident; ``collapse_kit.io.open_embeddings``
opens one) and ``GaussianSource`` (the seeded N(0, 1) table of ``gaussian_table``, generated
block by block: the Gaussian null of a streamed table).

``summarize`` is the two passes every streamed metric reads: pass 1 validates each block and
accumulates the column statistics; pass 2 the R factor of the centred table, the row norms and
unit-row sums, and a gather of the sampled rows; optionally for bootstrap resamples too.
"""
from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.metrics._threads import small_table_threads
from collapse_kit.metrics._validation import (
    ColumnStats, as_array, check_block, check_layout, stream_block_rows)
from collapse_kit.metrics.geometry import RowGeometry
from collapse_kit.metrics.spectrum import QR_BLOCK_ROWS, CenteredRFactor, Spectra

# analyze() and `collapse-kit analyze` stream a file or source of at least this many rows on
# their own (stream=None); below it the table is read whole, as before.
STREAM_MIN_ROWS = 1_000_000


class RowSource:
    """Base of the row-block sources: ``take`` and ``read_all`` from ``iter_blocks``."""

    shape: tuple[int, int]
    dtype: np.dtype
    name: str = "E"

    def iter_blocks(self, block_rows: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def take(self, rows) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as float64 (len(rows), d), in one pass."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise UserError(f"rows must lie in 0..{self.shape[0] - 1}")
        wanted = np.unique(rows)
        gather = RowGather(wanted, self.shape[1])
        start = 0
        for block in self.iter_blocks(stream_block_rows(self.shape[1])):
            gather.update(start, block)
            start += block.shape[0]
        return gather.rows(rows)

    def read_all(self) -> np.ndarray:
        """The whole table as float64 (n_items, d): for tables small enough to hold."""
        out = np.empty(self.shape)
        start = 0
        for block in self.iter_blocks(stream_block_rows(self.shape[1])):
            out[start:start + block.shape[0]] = block
            start += block.shape[0]
        return out


class ArraySource(RowSource):
    """An array (or torch tensor) in memory as a row-block source; blocks are float64 views or
    copies of it. The dtype, shape and row count are checked now, the values block by block."""

    def __init__(self, E, *, name: str = "E"):
        self.array = as_array(E)
        check_layout(self.array.dtype, self.array.shape, name=name)
        self.shape, self.dtype, self.name = tuple(self.array.shape), self.array.dtype, name

    def iter_blocks(self, block_rows: int) -> Iterator[np.ndarray]:
        for i in range(0, self.shape[0], block_rows):
            yield np.asarray(self.array[i:i + block_rows], dtype=np.float64)

    def take(self, rows) -> np.ndarray:
        return np.asarray(self.array[np.asarray(rows, dtype=np.int64)], dtype=np.float64)

    def read_all(self) -> np.ndarray:
        return np.asarray(self.array, dtype=np.float64)


class FileRowsSource(RowSource):
    """A 2-D float array stored in a file at byte ``offset`` (a .npy body, a safetensors tensor),
    read a block of rows at a time with explicit reads, so resident memory stays one block.

    ``stored_shape`` (rows, d) as stored; rows before ``first_row`` are skipped (a dropped
    padding row). ``dtype`` is the stored one (byte order included); ``bfloat16`` reads 2-byte
    words as bfloat16. Fortran-ordered arrays (rare: np.save of a transposed array) are read
    through a memory map whose pages are released after each block (madvise DONTNEED).
    Use ``collapse_kit.io.open_embeddings`` to open one with every check of ``load_embeddings``.
    """

    def __init__(self, path, *, offset: int, stored_shape: tuple[int, int], dtype,
                 name: str, first_row: int = 0, fortran: bool = False, bfloat16: bool = False):
        self.path = Path(path)
        self._offset, self._stored, self._first = int(offset), tuple(stored_shape), int(first_row)
        self._file_dtype = np.dtype(dtype)
        self._fortran, self._bfloat16 = fortran, bfloat16
        self.dtype = np.dtype(np.float32) if bfloat16 else self._file_dtype
        self.shape = (self._stored[0] - self._first, self._stored[1])
        self.name = name

    def _decode(self, raw: np.ndarray, n_rows: int) -> np.ndarray:
        if self._bfloat16:  # bfloat16 is the top half of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.reshape(n_rows, self.shape[1]).astype(np.float64)

    def _row_bytes(self) -> int:
        return self.shape[1] * self._file_dtype.itemsize

    def _read(self, f, row: int, n_rows: int) -> np.ndarray:
        """Rows row .. row + n_rows (of the analysed table) from the open file ``f``."""
        f.seek(self._offset + (self._first + row) * self._row_bytes())
        count = n_rows * self.shape[1]
        raw = np.fromfile(f, dtype=self._file_dtype, count=count)
        if raw.size != count:
            raise UserError(f"{self.path} ended while reading rows {row}..{row + n_rows - 1} of "
                            f"{self.name}: it is truncated or was changed while being read")
        return self._decode(raw, n_rows)

    def iter_blocks(self, block_rows: int) -> Iterator[np.ndarray]:
        n = self.shape[0]
        if self._fortran:
            yield from self._iter_fortran(block_rows)
            return
        with open(self.path, "rb") as f:
            for i in range(0, n, block_rows):
                yield self._read(f, i, min(block_rows, n - i))

    def _iter_fortran(self, block_rows: int) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            A = np.ndarray(self._stored, dtype=self._file_dtype, buffer=mm, offset=self._offset,
                           order="F")                                     # (rows, d), no copy
            try:
                for i in range(self._first, self._stored[0], block_rows):
                    block = np.array(A[i:i + block_rows])                 # (b, d) copy
                    mm.madvise(mmap.MADV_DONTNEED)  # the pages touched leave the resident set
                    yield self._decode(block.ravel(), block.shape[0])
            finally:
                del A  # the map cannot close while an array holds its buffer

    def take(self, rows) -> np.ndarray:
        if self._fortran:
            return super().take(rows)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.shape[1]))
        with open(self.path, "rb") as f:
            for j, row in enumerate(rows):
                out[j] = self._read(f, int(row), 1)[0]
        return out


class GaussianSource(RowSource):
    """The (n_items, d) table of i.i.d. N(0, 1) entries of ``gaussian_table(n_items, d,
    random_state=...)``, generated block by block and never held whole.

    Every pass restarts ``numpy.random.default_rng(random_state)`` and draws the rows in order;
    numpy's Generator fills a (b, d) request from the same stream as part of an (n, d) one, so
    the blocks are exactly the rows of ``gaussian_table`` (tested), whatever the block size.
    """

    dtype = np.dtype(np.float64)

    def __init__(self, n_items: int, d: int, *, random_state=0):
        self.shape = (int(n_items), int(d))
        self.random_state = random_state
        self.name = f"the {n_items} x {d} Gaussian table"

    def iter_blocks(self, block_rows: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.random_state)
        n, d = self.shape
        for i in range(0, n, block_rows):
            yield rng.standard_normal((min(block_rows, n - i), d))


def as_source(E, *, name: str = "E") -> RowSource:
    """``E`` if it is a source already (anything with ``iter_blocks``), else an ``ArraySource``."""
    return E if is_source(E) else ArraySource(E, name=name)


def is_source(E) -> bool:
    return hasattr(E, "iter_blocks") and hasattr(E, "shape")


class RowGather:
    """Collects the rows ``wanted`` (sorted, unique) of a table as its blocks stream past."""

    def __init__(self, wanted: np.ndarray, d: int):
        self.wanted = np.asarray(wanted, dtype=np.int64)
        self.out = np.empty((self.wanted.size, d))                        # (m, d)

    def update(self, start: int, block: np.ndarray) -> None:
        lo, hi = np.searchsorted(self.wanted, [start, start + block.shape[0]])
        self.out[lo:hi] = block[self.wanted[lo:hi] - start]

    def rows(self, rows) -> np.ndarray:
        """The gathered rows ``rows`` (each one of ``wanted``), in that order, (len(rows), d)."""
        return self.out[np.searchsorted(self.wanted, np.asarray(rows, dtype=np.int64))]


# -- the two passes of every streamed metric --------------------------------------------------

class TableSummary(NamedTuple):
    """What the streamed metrics read of one table (or one bootstrap resample of it)."""

    spectra: Spectra
    geometry: RowGeometry      # row norms, unit-row sums
    n_constant_columns: int


class StreamSummary(NamedTuple):
    table: TableSummary
    resamples: list            # one TableSummary per bootstrap resample; None if degenerate
    gathered: RowGather        # the sampled rows, as stored (float64)


class MultinomialWeights:
    """Bootstrap weights of a streamed table: how often each row appears in a resample of n
    rows drawn with replacement, generated block by block.

    The rows of the next block of b rows, out of r rows not yet passed, receive
    k ~ Binomial(draws left, b / r) of the draws (all of them in the last block), spread
    uniformly over the block's rows. Chained over the blocks this is exactly the
    Multinomial(n; 1/n, ..., 1/n) of an in-memory resample, so the resampled table has n rows.
    Seeded with ``seed``; a fresh object with the same seed and block sizes gives the same
    weights (the two passes rely on it).
    """

    def __init__(self, n: int, seed):
        self.rng = np.random.default_rng(seed)
        self.rows_left, self.draws_left = n, n

    def next(self, b: int) -> np.ndarray:
        """The weights (b,) float64 of the next b rows."""
        k = self.draws_left if b >= self.rows_left else \
            int(self.rng.binomial(self.draws_left, b / self.rows_left))
        w = np.bincount(self.rng.integers(0, b, size=k), minlength=b).astype(np.float64)
        self.rows_left -= b
        self.draws_left -= k
        return w


def resample_seed(seed: int, r: int) -> np.random.SeedSequence:
    """The seed of streamed bootstrap resample r's row weights: SeedSequence([seed, r, 1])."""
    return np.random.SeedSequence([int(seed), int(r), 1])


def summarize(source, *, block_rows: int | None = None, sample_rows=None,
              n_resamples: int = 0, seed: int = 0, device=None) -> StreamSummary:
    """Two passes over ``source``: everything the streamed metrics need, in memory
    O(block_rows * d + (1 + n_resamples) d^2 + len(sample_rows) * d).

    Pass 1 checks each block (NaN/Inf named by row) and accumulates ``ColumnStats``; pass 2
    the R factor of the table centred and scaled as ``spectra`` does (``CenteredRFactor``),
    the row norms and unit-row sums (``RowGeometry``), and gathers ``sample_rows`` (sorted,
    unique row indices). With ``n_resamples`` > 0 both passes do the same for each bootstrap
    resample r, the rows weighted by ``MultinomialWeights(n, resample_seed(seed, r))``; a
    resample whose rows are all zero has no summary (None). ``device`` (a torch device, e.g.
    "cuda"): the R factors are reduced in torch on it (``CenteredRFactor``); None: numpy.
    """
    n, d = source.shape
    name = getattr(source, "name", "E")
    check_layout(source.dtype, source.shape, name=name)
    rows = stream_block_rows(d, block_rows)
    gather = RowGather(np.zeros(0, np.int64) if sample_rows is None else sample_rows, d)
    with small_table_threads(QR_BLOCK_ROWS * d):  # as ``spectra``: the QRs are small
        stats = ColumnStats(d)
        boot = [ColumnStats(d) for _ in range(n_resamples)]
        weights = [MultinomialWeights(n, resample_seed(seed, r)) for r in range(n_resamples)]
        start = 0
        for block in source.iter_blocks(rows):                             # pass 1
            check_block(block, start, name=name)
            stats.update(block)
            for st, wr in zip(boot, weights):
                w = wr.next(block.shape[0])
                keep = w > 0
                st.update(block[keep], w[keep])
            start += block.shape[0]
        if start != n:
            raise UserError(f"{name} gave {start} rows where its shape says {n}")
        stats.check_not_all_zeros((n, d), name=name)

        tables = [_Accumulators(stats, d, device)] + [
            _Accumulators(st, d, device) if st.top > 0 else None for st in boot]
        weights = [MultinomialWeights(n, resample_seed(seed, r)) for r in range(n_resamples)]
        start = 0
        for block in source.iter_blocks(rows):                             # pass 2
            gather.update(start, block)
            tables[0].update(block)
            for acc, wr in zip(tables[1:], weights):
                w = wr.next(block.shape[0])  # drawn even for a None resample: same stream
                keep = w > 0
                if acc is not None:
                    acc.update(block[keep], w[keep])
            start += block.shape[0]
        summaries = [None if acc is None else acc.summary() for acc in tables]
    return StreamSummary(summaries[0], summaries[1:], gather)


class _Accumulators:
    """Pass 2 of one table (or resample): its R factor and row geometry."""

    def __init__(self, stats: ColumnStats, d: int, device=None):
        self.stats = stats
        self.r_factor = CenteredRFactor(stats.means(), device=device)
        self.geometry = RowGeometry(d, stats.exponent)

    def update(self, block: np.ndarray, weights: np.ndarray | None = None) -> None:
        k = self.stats.exponent
        Y = np.ldexp(block, -k) if k else block                           # (b, d), scaled
        self.r_factor.update(Y, weights)
        self.geometry.update(Y, weights)

    def summary(self) -> TableSummary:
        st = self.stats
        sp = self.r_factor.spectra(st.stds(), int(round(st.count)), st.exponent)
        return TableSummary(sp, self.geometry, st.n_constant_columns())
