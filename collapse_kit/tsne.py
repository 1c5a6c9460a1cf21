"""t-SNE maps of item-embedding tables, with the same settings for every panel of a figure.

``tsne_map(E)`` is the one entry point: column-standardise E as the ADRec authors did (option:
raw rows), find each item's exact nearest neighbours, build openTSNE's perplexity affinities,
start from a PCA initialisation, and optimise (openTSNE's early exaggeration then its normal
phase). Every part is importable on its own (``standardize``, ``exact_neighbors``,
``TSNESettings``).

Differences from the authors' notebook (official-implementation.md section 6), and why:

* openTSNE instead of scikit-learn's ``TSNE`` (benchmarks/bench_tsne.py times both): the
  Barnes-Hut gradient below 10,000 items and the FFT-interpolated one from there on (the only
  way to map Yelp's 64,669 items in minutes rather than hours on two cores);
* exact neighbours from one blocked matrix product instead of an approximate index (Annoy): on
  a 64,669 x 128 table they are faster here, and exact (Annoy above 150,000 items);
* a fixed seed (the notebook seeds the t-SNE, not its Gaussian panel);
* openTSNE's iteration counts (250 exaggerated + 500 normal) instead of scikit-learn's 1000, and
  250 normal iterations from 20,000 items on: the FFT grid grows with the map, and the last 250
  iterations would double the time of a 64,669-item map (benchmarks/bench_tsne.md has the
  numbers, including 500 iterations; ``n_iter`` overrides).

Reference: van der Maaten and Hinton, "Visualizing data using t-SNE", JMLR 9 (2008); Linderman
et al., "Fast interpolation-based t-SNE for improved visualization of single-cell RNA-seq data",
Nature Methods 16 (2019); Policar et al., "openTSNE", JSS 109 (2024).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.metrics._validation import as_table, power_of_two_scaled
from collapse_kit.metrics.spectrum import zscore

log = logging.getLogger(__name__)

METHODS = ("auto", "bh", "fft")
NEIGHBORS = ("auto", "exact", "annoy")
# "auto" neighbours: exact up to this many items; the O(n^2 d) search is ~20 s at 65k items on
# two cores but grows quadratically, so larger tables use openTSNE's approximate Annoy index.
EXACT_UP_TO = 150_000
# "auto" runs on every core from PARALLEL_FROM items (below, one thread beats two: start-up and
# waiting cost more than the work) and uses the FFT-interpolated gradient from FFT_FROM items:
# Barnes-Hut costs O(n log n) per iteration with a large constant, FFT O(n) plus a grid whose
# cost grows with the map's extent. Wall seconds on the 2-core dev machine, both on two threads
# (benchmarks/bench_tsne.md): 6,086 items BH 22.7 / FFT 41.1; 15,000 items BH 68.1 / FFT 57.5;
# 64,669 items FFT 72.5 (BH took 370 s in a separate run). openTSNE's own "auto" also switches
# at 10,000.
PARALLEL_FROM = 5_000
FFT_FROM = 10_000
# From this many items the normal phase runs 250 iterations instead of 500: the FFT grid grows
# with the map, and iterations 250-500 would double the time of a 64,669-item map. All of the
# paper's datasets but Yelp (64,669 items) stay below.
SHORT_FROM = 20_000


@dataclasses.dataclass(frozen=True)
class TSNESettings:
    """t-SNE settings; a figure uses one of these for all its panels."""

    perplexity: float = 30.0         # as the notebook (scikit-learn's default)
    early_exaggeration_iter: int = 250
    n_iter: int | None = None        # normal-phase iterations; None: 500 below 20k items, else 250
    method: str = "auto"             # negative gradient: "bh", "fft", or "auto" (fft from 10k items)
    neighbors: str = "auto"          # "exact", "annoy" (approximate), or "auto" (exact to 150k items)
    standardize: bool = True         # z-score columns first, as the authors did
    random_state: int = 2024         # the notebook's seed
    n_jobs: int | None = None        # threads; None: 1 below 5k items (faster), else all cores

    def validate(self) -> "TSNESettings":
        if not (isinstance(self.perplexity, (int, float)) and math.isfinite(self.perplexity)
                and self.perplexity > 0):
            raise UserError(f"perplexity must be a finite positive number (e.g. 30); got "
                            f"{self.perplexity!r}")
        for name in ("early_exaggeration_iter", "n_iter"):
            value = getattr(self, name)
            if value is None and name == "n_iter":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"{name} must be an integer >= 0; got {value!r}")
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int)
                                        or self.n_jobs < 1):
            raise UserError(f"n_jobs must be an integer >= 1 or None (automatic); got {self.n_jobs!r}")
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.neighbors not in NEIGHBORS:
            raise UserError(f"neighbors must be one of {', '.join(NEIGHBORS)}; got {self.neighbors!r}")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, int):
            raise TypeError(f"random_state must be an integer; got {self.random_state!r}")
        return self

    def method_for(self, n_items: int) -> str:
        """The gradient method used for a table of ``n_items`` rows."""
        if self.method != "auto":
            return self.method
        return "fft" if n_items >= FFT_FROM else "bh"

    def iterations_for(self, n_items: int) -> int:
        """Normal-phase iterations for a table of ``n_items`` rows: ``n_iter``, or 500 (openTSNE's
        default) below SHORT_FROM items and 250 from there on (benchmarks/bench_tsne.md)."""
        if self.n_iter is not None:
            return self.n_iter
        return 500 if n_items < SHORT_FROM else 250

    def neighbors_for(self, n_items: int) -> str:
        """The neighbour search used for a table of ``n_items`` rows."""
        if self.neighbors != "auto":
            return self.neighbors
        return "exact" if n_items <= EXACT_UP_TO else "annoy"

    def threads_for(self, n_items: int) -> int:
        """Threads used for a table of ``n_items`` rows: ``n_jobs``, or automatic."""
        if self.n_jobs is not None:
            return self.n_jobs
        return _cpu_count() if n_items >= PARALLEL_FROM else 1


def standardize(E) -> np.ndarray:
    """(E - column mean) / (column std + 1e-9), ddof 0, as the authors' notebook; float32 (n, d).

    That is ``collapse_kit.metrics.zscore`` (scale-safe: the same map for E and 1e30 E)."""
    return zscore(E).astype(np.float32)


def single_point(E) -> bool:
    """True when every row of E (n, d) is the same point (complete collapse).

    Such a table has no neighbourhoods to preserve: its t-SNE map is that one point, and
    ``tsne_map`` returns it (all zeros) without running t-SNE.
    """
    return _same_point(as_table(E))


def _same_point(X: np.ndarray) -> bool:
    return bool((X.max(axis=0) == X.min(axis=0)).all())


def exact_neighbors(X, k: int, *, block: int = 1024, n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row of X (n, d), by Euclidean distance, nearest first.

    Returns (indices (n, k) int64, distances (n, k) float32). Computed block by block:
    ||x - y||^2 = ||y||^2 - 2 x.y + ||x||^2, where the last term is the same for a whole row and
    so does not change the ranking; it is added only to the k kept values. Memory O(block * n);
    time O(n^2 d) in one matrix product per block (BLAS), which beats an approximate index on a
    few cores up to about 10^5 items. The row itself is excluded (and, among exact duplicates,
    only its own index is removed).
    """
    import torch

    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    if not 1 <= k < n:
        raise UserError(f"k must be in 1..{n - 1} for a table of {n} rows; got {k}")
    threads = torch.get_num_threads()
    if n_jobs is not None:
        torch.set_num_threads(n_jobs)
    try:
        with torch.no_grad():
            Xt = torch.from_numpy(X)                       # (n, d), shares memory
            sq = (Xt.double() ** 2).sum(dim=1).float()     # (n,)
            indices = np.empty((n, k), dtype=np.int64)
            distances = np.empty((n, k), dtype=np.float32)
            for start in range(0, n, block):
                q = Xt[start:start + block]                # (b, d)
                # (b, n): ||y||^2 - 2 x.y, fused into one matrix product
                partial = torch.addmm(sq.unsqueeze(0), q, Xt.T, alpha=-2.0)
                vals, idx = torch.topk(partial, k + 1, dim=1, largest=False, sorted=True)  # (b, k+1)
                rows = torch.arange(start, start + q.shape[0]).unsqueeze(1)
                is_self = idx == rows
                # Drop the row itself; if ties pushed it out of the k+1, drop the farthest.
                is_self[:, -1] |= ~is_self.any(dim=1)
                keep = ~is_self
                idx = idx[keep].view(-1, k)
                vals = vals[keep].view(-1, k) + sq[start:start + q.shape[0]].unsqueeze(1)
                indices[start:start + q.shape[0]] = idx.numpy()
                distances[start:start + q.shape[0]] = vals.clamp_min_(0).sqrt_().numpy()
    finally:
        torch.set_num_threads(threads)
    return indices, distances


class OverlappedFFTGradient:
    """openTSNE's FFT-interpolation gradient with its two halves computed at the same time.

    openTSNE's ``kl_divergence_fft`` computes the repulsive forces (FFT interpolation, one
    thread) and then the attractive forces (over the kNN graph, ``n_jobs`` threads). Here the
    attractive forces run on a worker thread, still on all ``n_jobs`` threads, while the calling
    thread computes the repulsive ones; both release the GIL. While the map is compact the FFT is
    cheap and the attractive sum (about 130 neighbours a row at 65k items) dominates, so it
    keeps every core; the brief oversubscription costs less than leaving a core idle
    (64,669 items: 93.8 s with the attractive sum on one thread, 72.5 s on both,
    benchmarks/bench_tsne.md). Same arithmetic as openTSNE (only the final sum is taken in another
    order; tests/test_tsne.py compares the two). Uses openTSNE's compiled ``_tsne`` kernels;
    ``make()`` returns None if this openTSNE lacks them, and callers then use plain "fft".
    """

    def __init__(self, kernels, epsilon: float):
        from concurrent.futures import ThreadPoolExecutor

        self._kernels = kernels
        self._epsilon = epsilon
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsne-attractive")

    @classmethod
    def make(cls) -> "OverlappedFFTGradient | None":
        try:
            from openTSNE import _tsne
            from openTSNE.tsne import EPSILON
        except ImportError:
            return None
        needed = ("estimate_negative_gradient_fft_2d", "estimate_positive_gradient_nn")
        if not all(hasattr(_tsne, name) for name in needed):
            return None
        return cls(_tsne, EPSILON)

    def __call__(self, embedding, P, dof, fft_params, reference_embedding=None,
                 should_eval_error=False, n_jobs=1, **_):
        if reference_embedding is not None or embedding.shape[1] != 2:
            from openTSNE.tsne import kl_divergence_fft

            return kl_divergence_fft(embedding, P, dof, fft_params, reference_embedding,
                                     should_eval_error, n_jobs)
        repulsive = np.zeros_like(embedding, dtype=np.float64, order="C")   # (n, 2)
        attractive = np.zeros_like(embedding, dtype=np.float64, order="C")  # (n, 2)
        future = self._pool.submit(
            self._kernels.estimate_positive_gradient_nn, P.indices, P.indptr, P.data, embedding,
            embedding, attractive, dof, num_threads=max(1, n_jobs),
            should_eval_error=should_eval_error)
        sum_q = self._kernels.estimate_negative_gradient_fft_2d(embedding, repulsive, **fft_params, dof=dof)
        sum_p, kl_divergence = future.result()
        if should_eval_error:
            kl_divergence += sum_p * np.log(sum_q + self._epsilon)
        repulsive += attractive
        return kl_divergence, repulsive

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def tsne_map(E, settings: TSNESettings = TSNESettings()) -> np.ndarray:
    """A 2-D t-SNE map of the rows of E (n_items, d); returns float64 (n_items, 2).

    Deterministic for a given ``settings.random_state`` (and thread count: FFT and BH sums are
    floating-point reductions). Needs at least 3 * perplexity + 1 rows; for smaller tables lower
    the perplexity. A table whose rows are all the same point (``single_point``) maps to one
    point: zeros (n_items, 2), without running t-SNE (whose PCA start would divide by 0). The raw
    rows (``standardize=False``) are rescaled by an exact power of two when far from 1, so their
    float32 distances neither overflow nor underflow.
    """
    from openTSNE import TSNE, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    settings = settings.validate()
    X = standardize(E) if settings.standardize else \
        power_of_two_scaled(as_table(E))[0].astype(np.float32)
    n = X.shape[0]
    k = int(3 * settings.perplexity)
    if n <= k:
        raise UserError(f"t-SNE with perplexity {settings.perplexity:g} needs more than {k} items; "
                        f"the table has {n}: lower the perplexity below {max((n - 1) / 3, 1):.3g}")
    if _same_point(X):
        log.info("t-SNE of %d x %d: every row is the same point; the map is one point", n, X.shape[1])
        return np.zeros((n, 2))
    t0 = time.perf_counter()
    n_jobs = settings.threads_for(n)
    if settings.neighbors_for(n) == "exact":
        index = PrecomputedNeighbors(*exact_neighbors(X, k, n_jobs=n_jobs))
        P = affinity.PerplexityBasedNN(perplexity=settings.perplexity, n_jobs=n_jobs, knn_index=index)
    else:
        P = affinity.PerplexityBasedNN(X, perplexity=settings.perplexity, method="annoy",
                                       n_jobs=n_jobs, random_state=settings.random_state)
    t1 = time.perf_counter()
    init = initialization.pca(X, random_state=settings.random_state)
    method = settings.method_for(n)
    gradient = OverlappedFFTGradient.make() if method == "fft" and n_jobs >= 2 else None
    tsne = TSNE(n_components=2, perplexity=settings.perplexity,
                early_exaggeration_iter=settings.early_exaggeration_iter,
                n_iter=settings.iterations_for(n),
                negative_gradient_method=gradient or method, n_jobs=n_jobs,
                random_state=settings.random_state)
    try:
        Y = np.asarray(tsne.fit(affinities=P, initialization=init), dtype=np.float64)
    finally:
        if gradient is not None:
            gradient.close()
    log.info("t-SNE of %d x %d (%s): neighbours %.1f s, total %.1f s", n, X.shape[1], method,
             t1 - t0, time.perf_counter() - t0)
    return Y


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def robust_extent(Y, *, coverage: float = 0.99) -> tuple[np.ndarray, float]:
    """The centre and half-width of a square that holds the central ``coverage`` of a 2-D map.

    Per axis, take the (1 - coverage)/2 and (1 + coverage)/2 quantiles of the coordinates; the
    centre is the middle of that box and the half-width its larger half-side. A size of the map
    that ignores a few far outliers: the figures' "xk" scale labels are ratios of it and their
    windows are centred on it. When the central ``coverage`` is a single point but the map is not
    (almost every item at one place), the box of all points is used instead, so that the few
    others stay in view. Returns (centre (2,), half-width in (0, inf) unless all points coincide,
    then 0).
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2 or Y.shape[0] < 1:
        raise UserError(f"a t-SNE map must be (n, 2); got shape {Y.shape}")
    if not 0 < coverage <= 1:
        raise UserError(f"coverage must be in (0, 1]; got {coverage}")
    lo, hi = np.quantile(Y, [(1 - coverage) / 2, (1 + coverage) / 2], axis=0)  # (2,), (2,)
    if np.max(hi - lo) == 0:
        lo, hi = Y.min(axis=0), Y.max(axis=0)
    return (lo + hi) / 2, float(np.max(hi - lo) / 2)


# -- huge tables: a sample of the rows, and placing other tables in a map -------------------------

MAP_SAMPLE_DEFAULT = 100_000  # tables up to this many rows are mapped whole by default
POPULARITY_STRATA = 10


def sample_for_map(n_items: int, sample: int | None = MAP_SAMPLE_DEFAULT, *, popularity=None,
                   seed: int = 0) -> tuple[np.ndarray, str]:
    """The rows a t-SNE map of an ``n_items``-row table draws, and a sentence saying which.

    ``sample`` None or >= n_items: every row. Otherwise ``sample`` rows without replacement,
    seeded: stratified by popularity when ``popularity`` (n_items,) is given (the items ranked
    by popularity and cut into 10 equal strata, each sampled in proportion to its size, so the
    head and the tail keep their shares), uniform otherwise. Returns sorted row indices.
    """
    if sample is None or sample >= n_items:
        return np.arange(n_items), f"all {n_items:,} items"
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise UserError(f"a t-SNE sample needs at least 2 rows; got {sample!r}")
    rng = np.random.default_rng(seed)
    if popularity is None:
        rows = rng.choice(n_items, size=sample, replace=False)
        return np.sort(rows), f"a uniform sample of {sample:,} of {n_items:,} items (seed {seed})"
    popularity = np.asarray(popularity, dtype=np.float64)
    if popularity.shape != (n_items,):
        raise UserError(f"popularity has {popularity.size} values for {n_items} items")
    order = np.argsort(-popularity, kind="stable")
    strata = np.array_split(order, POPULARITY_STRATA)
    # largest-remainder apportionment: the strata's shares of the sample sum to ``sample``
    quota = np.array([len(s) for s in strata], dtype=np.float64) * sample / n_items
    take = np.floor(quota).astype(int)
    for j in np.argsort(-(quota - take), kind="stable")[: sample - take.sum()]:
        take[j] += 1
    rows = np.concatenate([rng.choice(s, size=t, replace=False) for s, t in zip(strata, take)])
    return np.sort(rows), (f"a sample of {sample:,} of {n_items:,} items stratified by "
                           f"popularity ({POPULARITY_STRATA} strata, seed {seed})")


def tsne_map_and_place(E, others, settings: TSNESettings = TSNESettings()):
    """The t-SNE map of E and the rows of each table in ``others`` placed in that map
    (openTSNE's ``transform``: each new point is optimised against the fixed map, from the
    median position of its nearest reference rows). The other tables are standardised with
    E's column statistics (``settings.standardize``), so they must live in E's space, e.g. the
    same model at another stage. Returns (Y of E, [Y of each other table])."""
    from openTSNE import TSNE, affinity, initialization

    settings = settings.validate()
    X = as_table(E)
    d = X.shape[1]
    rest = [as_table(O, name="the placed table") for O in others]
    for O in rest:
        if O.shape[1] != d:
            raise UserError(f"a table of width {O.shape[1]} cannot be placed in the map of a "
                            f"width-{d} table; placing needs tables of the same space")
    if settings.standardize:
        mean, std = X.mean(axis=0), X.std(axis=0) + 1e-9
        prep = [((T - mean) / std).astype(np.float32) for T in (X, *rest)]
    else:
        scale = 2.0 ** -power_of_two_scaled(X)[1]
        prep = [(T * scale).astype(np.float32) for T in (X, *rest)]
    n = X.shape[0]
    k = int(3 * settings.perplexity)
    if n <= k:
        raise UserError(f"t-SNE with perplexity {settings.perplexity:g} needs more than {k} items; "
                        f"the table has {n}")
    if _same_point(prep[0]):
        raise UserError("every row of the reference table is the same point; there is no map "
                        "to place other tables in")
    n_jobs = settings.threads_for(n)
    method = "exact" if settings.neighbors_for(n) == "exact" else "annoy"
    P = affinity.PerplexityBasedNN(prep[0], perplexity=settings.perplexity, method=method,
                                   n_jobs=n_jobs, random_state=settings.random_state)
    init = initialization.pca(prep[0], random_state=settings.random_state)
    tsne = TSNE(n_components=2, perplexity=settings.perplexity,
                early_exaggeration_iter=settings.early_exaggeration_iter,
                n_iter=settings.iterations_for(n),
                negative_gradient_method=settings.method_for(n), n_jobs=n_jobs,
                random_state=settings.random_state)
    embedding = tsne.fit(affinities=P, initialization=init)
    placed = [np.asarray(embedding.transform(T), dtype=np.float64) for T in prep[1:]]
    return np.asarray(embedding, dtype=np.float64), placed


def panel_maps(tables, names, rows, settings: TSNESettings = TSNESettings(), *,
               sample: int | None = MAP_SAMPLE_DEFAULT, popularity=None, gaussian: bool = True,
               transform: bool = False, seed: int = 0, say=lambda line: None):
    """The maps of a t-SNE figure's panels (``collapse_kit.figures.tsne_figure``), with their
    names and rows: (maps, names, rows).

    Each table is first cut to ``sample_for_map``'s rows (``popularity``: one per table, or
    None; a sampled panel's name says how). ``gaussian``: one same-shape Gaussian panel per
    row (of the row's first table, seeded), named "Gaussian". ``transform``: the first table is
    mapped and the others are placed in its map (``tsne_map_and_place``; no Gaussian panels).
    ``say`` receives one progress line per map.
    """
    from collapse_kit.metrics import gaussian_table

    names, rows = list(names), list(rows)
    popularity = popularity or [None] * len(tables)
    sampled = []
    for i, table in enumerate(tables):
        kept, text = sample_for_map(table.shape[0], sample, popularity=popularity[i], seed=seed)
        if kept.size < table.shape[0]:
            names[i] = f"{names[i]}\n({text})"
            table = table[kept]
        sampled.append(table)
    tables = sampled
    if transform and len(tables) < 2:
        raise UserError("--transform places the items of the second and later checkpoints in "
                        "the first one's map: give at least two checkpoints")
    if transform:
        say(f"t-SNE {names[0]}: {tables[0].shape[0]}x{tables[0].shape[1]}; placing "
            f"{', '.join(names[1:])} in its map (openTSNE transform)")
        first, placed = tsne_map_and_place(tables[0], tables[1:], settings)
        return ([first, *placed],
                [names[0]] + [f"{n} (placed in {names[0]}'s map)" for n in names[1:]], rows)
    if gaussian:
        if "Gaussian" in names:
            raise UserError("a checkpoint is named 'Gaussian', the reference panel's name; rename "
                            "it or pass --no-gaussian")
        for row in list(dict.fromkeys(rows)):
            n, d = tables[rows.index(row)].shape
            tables.append(gaussian_table(n, d, random_state=seed))
            names.append("Gaussian")
            rows.append(row)
    maps = []
    for name, row, table in zip(names, rows, tables):
        n = table.shape[0]
        label = f"t-SNE {name}{' (' + row + ')' if row else ''}: {n}x{table.shape[1]}"
        if single_point(table):
            say(f"{label}: every row is the same point (complete collapse); drawn as one point "
                "with a note, no t-SNE run")
        else:
            say(f"{label}, {settings.method_for(n)}, 250 + {settings.iterations_for(n)} "
                "iterations")
        maps.append(tsne_map(table, settings))
    return maps, names, rows
