"""The convenience entry point ``analyze(E)`` and the text tables of ``collapse-kit analyze/compare``.

``analyze`` runs every metric of ``collapse_kit.metrics`` on one item-embedding table (n_items, d)
and returns one flat dict keyed by metric name (docs/metrics.md lists every key). The parts stay
importable alone: ``compute_metrics`` (the metric values only), ``gaussian_null`` and
``bootstrap_ci`` (collapse_kit.metrics.uncertainty), and the formatters below.

A metric that is undefined for the table (isotropy when n_items <= d, the KMeans silhouette of a
table with fewer distinct rows than clusters, ...) is reported as None, with the reason under
``K_undefined``; every other metric is still computed. The output stays one flat dict.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import numpy as np

from collapse_kit import stream as streaming
from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics import (
    bootstrap_ci, covariance_entropy, effective_rank, gaussian_null, gaussian_table,
    information_abundance, isotropy, kl_to_gaussian, kl_to_gaussian_logdet,
    mean_cosine_similarity, numerical_rank, participation_ratio, power_law_decay, row_norm_stats,
    silhouette, silhouette_labels, singular_value_entropy, singular_value_variance, spectra,
    stable_rank, top_singular_values, uniformity)
from collapse_kit.metrics._threads import thread_limit
from collapse_kit.metrics._validation import (
    as_table, check_optional_sample, check_positive_int, sample_rows, stream_block_rows)
from collapse_kit.metrics.uncertainty import bootstrap_intervals
from collapse_kit.tables import Table
from collapse_kit.metrics.cluster import (
    DEFAULT_SAMPLE_SIZE, PAPER_KMEANS_N_INIT, PAPER_KMEANS_SEED, PAPER_N_CLUSTERS)

# The paper's Table 5 metrics (JSON keys fixed by the issue), the corrected versions, the rest.
PAPER_KEYS = ("top5_singular_values", "singular_value_variance", "singular_value_entropy",
              "covariance_entropy", "isotropy", "kl_to_gaussian", "silhouette")
CORRECTED_KEYS = ("kl_to_gaussian_logdet", "silhouette_labels")
BEYOND_KEYS = ("effective_rank", "information_abundance", "stable_rank", "participation_ratio",
               "power_law_alpha", "power_law_r2",
               "numerical_rank", "uniformity", "mean_cosine_similarity", "row_norm_mean",
               "row_norm_std", "row_norm_min", "row_norm_max")
GROUPS = {"paper": PAPER_KEYS, "corrected": CORRECTED_KEYS, "beyond": BEYOND_KEYS}
GROUP_TITLES = {"paper": "Paper (ADRec Table 5)", "corrected": "Corrected",
                "beyond": "Beyond the paper"}
INTEGER_KEYS = ("numerical_rank",)
# result[K + UNDEFINED_SUFFIX] says why result[K] is None (the metric has no value for the table).
UNDEFINED_SUFFIX = "_undefined"
FORMATS = ("table", "json", "csv", "markdown")
COMPARE_FORMATS = ("markdown", "csv", "latex")


# -- computing ----------------------------------------------------------------------------------

def compute_metrics(E, labels=None, *, groups: Sequence[str] = ("paper", "corrected", "beyond"),
                    n_clusters: int = PAPER_N_CLUSTERS, kmeans_seed: int = PAPER_KMEANS_SEED,
                    kmeans_n_init: int = PAPER_KMEANS_N_INIT,
                    silhouette_sample: int | None = DEFAULT_SAMPLE_SIZE,
                    uniformity_sample: int | None = DEFAULT_SAMPLE_SIZE,
                    uniformity_t: float = 2.0, seed: int = 0,
                    threads: int | None = 1) -> dict[str, object]:
    """The metric values of E (n_items, d): {JSON key: float, int, list or None}.

    A metric undefined for E (``UndefinedMetric``) is None, and ``K_undefined`` holds the reason
    (a string); nothing else is in the dict. ``labels`` (n_items,) int, -1 = unlabelled, enables
    ``silhouette_labels``. ``groups`` picks among "paper", "corrected" and "beyond". ``seed`` drives every sample (silhouette,
    uniformity); KMeans uses ``kmeans_seed`` (42, the paper's). ``threads`` caps BLAS/OpenMP
    threads while computing (None: the libraries' default, every core). The default is 1: on
    the 2-core machines this is built for, one thread was faster than two for every metric once
    anything else runs (e.g. KMeans on 64,669 x 128: 0.7 s vs 3.3 s); values agree up to
    floating-point rounding.
    """
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise UserError(f"unknown metric group(s) {sorted(unknown)}; choose from {list(GROUPS)}")
    X = as_table(E)
    with thread_limit(threads):
        return _compute(X, labels, groups, n_clusters, kmeans_seed, kmeans_n_init,
                        silhouette_sample, uniformity_sample, uniformity_t, seed)


def _compute(X, labels, groups, n_clusters, kmeans_seed, kmeans_n_init, silhouette_sample,
             uniformity_sample, uniformity_t, seed) -> dict[str, object]:
    sp = spectra(X)  # three SVDs shared by every spectral metric
    return _metric_values(sp, groups, _Parts(
        silhouette=lambda: silhouette(X, n_clusters=n_clusters, random_state=kmeans_seed,
                                      n_init=kmeans_n_init, sample_size=silhouette_sample,
                                      sample_seed=seed),
        silhouette_labels=None if labels is None else lambda: _silhouette_of_labelled(
            X, labels, sample_size=silhouette_sample, random_state=seed),
        uniformity=lambda: uniformity(X, t=uniformity_t, sample_size=uniformity_sample,
                                      random_state=seed),
        mean_cosine=lambda: mean_cosine_similarity(X),
        norms=lambda: row_norm_stats(X)))


class _Parts(NamedTuple):
    """The non-spectral metrics of one table, each a function of nothing: the in-memory path
    calls the metric functions on the table, the streamed one reads running sums and samples."""

    silhouette: Callable[[], float]
    silhouette_labels: Callable[[], float] | None  # None: no labels
    uniformity: Callable[[], float]
    mean_cosine: Callable[[], float]
    norms: Callable[[], dict]


def _metric_values(sp, groups, parts: _Parts) -> dict[str, object]:
    """``compute_metrics``' dict from a table's spectra and its other metrics (``_Parts``)."""
    out: dict[str, object] = {}

    def put(keys: tuple[str, ...], fn, *args, **kwargs) -> None:
        """out[key] = fn(...) (a tuple of values for several keys), or None and the reason."""
        try:
            value = fn(*args, **kwargs)
        except UndefinedMetric as exc:
            for key in keys:
                out[key] = None
                out[key + UNDEFINED_SUFFIX] = str(exc)
            return
        out.update(zip(keys, value if len(keys) > 1 else (value,)))

    if "paper" in groups:
        k = min(5, sp.standardized.size)
        put(("top5_singular_values",), lambda: top_singular_values(sp, k).tolist())
        put(("singular_value_variance",), singular_value_variance, sp)
        put(("singular_value_entropy",), singular_value_entropy, sp)
        put(("covariance_entropy",), covariance_entropy, sp)
        put(("isotropy",), isotropy, sp)
        put(("kl_to_gaussian",), kl_to_gaussian, sp)
        put(("silhouette",), parts.silhouette)
    if "corrected" in groups:
        put(("kl_to_gaussian_logdet",), kl_to_gaussian_logdet, sp)
        if parts.silhouette_labels is not None:
            put(("silhouette_labels",), parts.silhouette_labels)
    if "beyond" in groups:
        put(("effective_rank",), effective_rank, sp)
        put(("information_abundance",), information_abundance, sp)
        put(("stable_rank",), stable_rank, sp)
        put(("participation_ratio",), participation_ratio, sp)
        put(("power_law_alpha", "power_law_r2"), power_law_decay, sp)
        put(("numerical_rank",), numerical_rank, sp)
        put(("uniformity",), parts.uniformity)
        put(("mean_cosine_similarity",), parts.mean_cosine)
        norms = parts.norms()
        for stat in ("mean", "std", "min", "max"):
            out[f"row_norm_{stat}"] = norms[stat]
    return out


def _silhouette_of_labelled(X: np.ndarray, labels, **kwargs) -> float:
    """``silhouette_labels`` over the labelled rows (label >= 0) of X (n, d)."""
    labelled = _labelled_rows(labels, X.shape[0])
    m = int(labelled.sum())
    if m < 3:
        raise UndefinedMetric(f"only {m} item(s) have a label; a silhouette needs at least 3")
    if not X[labelled].any():
        raise UndefinedMetric(f"all {m} labelled items have all-zero rows (one point)")
    return silhouette_labels(X[labelled], np.asarray(labels)[labelled], **kwargs)


def _labelled_rows(labels, n_items: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_items,) or labels.dtype.kind not in "iu":
        raise UserError(f"labels must be an integer array of shape ({n_items},) with -1 for "
                        f"unlabelled items; got dtype {labels.dtype}, shape {labels.shape}")
    return labels >= 0


# -- computing, streamed: a table read by blocks of rows (collapse_kit.stream) -------------------

def compute_metrics_streamed(source, labels=None, *,
                             groups: Sequence[str] = ("paper", "corrected", "beyond"),
                             n_clusters: int = PAPER_N_CLUSTERS,
                             kmeans_seed: int = PAPER_KMEANS_SEED,
                             kmeans_n_init: int = PAPER_KMEANS_N_INIT,
                             silhouette_sample: int | None = DEFAULT_SAMPLE_SIZE,
                             uniformity_sample: int | None = DEFAULT_SAMPLE_SIZE,
                             uniformity_t: float = 2.0, seed: int = 0, threads: int | None = 1,
                             block_rows: int | None = None, device=None) -> dict[str, object]:
    """``compute_metrics`` of a table read block by block from a row-block source (or array).

    Same keys and settings. Memory O(block_rows * d + d^2) plus the sampled rows; the table is
    read twice (``collapse_kit.stream.summarize``). Exact, up to rounding: every spectral
    metric (from the R factor of the centred table), the row norms and the mean cosine (from
    running sums). Sampled: uniformity and silhouette_labels on the same seeded rows as in
    memory (so equal up to rounding), and the KMeans silhouette, whose KMeans is fitted on its
    seeded sample of ``silhouette_sample`` rows instead of on every row (identical to the
    in-memory value when the sample holds every row). docs/metrics.md, "Tables of millions".
    """
    values, _counts, _draws = _streamed(
        streaming.as_source(source), labels, groups=groups, n_clusters=n_clusters,
        kmeans_seed=kmeans_seed, kmeans_n_init=kmeans_n_init,
        silhouette_sample=silhouette_sample, uniformity_sample=uniformity_sample,
        uniformity_t=uniformity_t, seed=seed, threads=threads, block_rows=block_rows,
        device=device)
    return values


def _streamed(source, labels, *, groups, n_clusters, kmeans_seed, kmeans_n_init,
              silhouette_sample, uniformity_sample, uniformity_t, seed, threads, block_rows,
              n_resamples: int = 0, device=None) -> tuple[dict, dict, list[dict]]:
    """(metric values, {n_constant_columns, n_zero_rows}, one metric dict per bootstrap
    resample) of a streamed table, from one two-pass ``summarize``."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise UserError(f"unknown metric group(s) {sorted(unknown)}; choose from {list(GROUPS)}")
    silhouette_sample = check_optional_sample(silhouette_sample, "silhouette_sample")
    uniformity_sample = check_optional_sample(uniformity_sample, "uniformity_sample")
    n = source.shape[0]
    labels = None if labels is None or "corrected" not in groups else np.asarray(labels)
    samples = _StreamSamples(n, labels, groups, silhouette_sample, uniformity_sample, seed)
    kmeans = dict(n_clusters=n_clusters, random_state=kmeans_seed, n_init=kmeans_n_init)
    with thread_limit(threads):
        summary = streaming.summarize(source, block_rows=block_rows, sample_rows=samples.union,
                                      n_resamples=n_resamples, seed=seed, device=device)
        table = summary.table
        values = _metric_values(table.spectra, groups, samples.parts(
            table, summary.gathered, labels, kmeans, uniformity_t))
        draws = []
        for r, resample in enumerate(summary.resamples):
            if resample is None:  # every row drawn is zero: no metric has a value
                draws.append({k: None for k, v in values.items() if not isinstance(v, str)})
                continue
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), r, 2]))
            draws.append(_metric_values(resample.spectra, groups, samples.parts(
                resample, summary.gathered, labels, kmeans, uniformity_t, rng=rng)))
    counts = {"n_constant_columns": table.n_constant_columns,
              "n_zero_rows": int(table.geometry.n_zero)}
    return values, counts, draws


class _StreamSamples:
    """The seeded row samples of a streamed table: the same rows ``compute_metrics`` samples
    (``sample_rows(n, size, seed)``), every row when the size covers the table."""

    def __init__(self, n, labels, groups, silhouette_sample, uniformity_sample, seed):
        def rows(count, size):
            idx = sample_rows(count, size, seed)
            return np.arange(count) if idx is None else idx

        empty = np.zeros(0, np.int64)
        self.silhouette = rows(n, silhouette_sample) if "paper" in groups else empty
        self.uniformity = rows(n, uniformity_sample) if "beyond" in groups else empty
        self.labelled = self.n_labelled = None
        if labels is not None:
            labelled = np.flatnonzero(_labelled_rows(labels, n))
            self.n_labelled = labelled.size
            self.labelled = labelled[rows(labelled.size, silhouette_sample)]
        self.union = np.unique(np.concatenate(
            [self.silhouette, self.uniformity] + ([] if labels is None else [self.labelled])))

    def parts(self, table, gathered, labels, kmeans: dict, t: float, rng=None) -> _Parts:
        """The ``_Parts`` of the table (or of a bootstrap resample, rng given: each sample
        resampled with replacement, in this order: silhouette, uniformity, labelled)."""
        def pick(idx):
            return idx if rng is None else idx[rng.integers(0, idx.size, size=idx.size)]

        sil, uni = pick(self.silhouette), pick(self.uniformity)
        lab = None if labels is None else pick(self.labelled)
        return _Parts(
            silhouette=lambda: silhouette(gathered.rows(sil), sample_size=None, **kmeans),
            silhouette_labels=None if labels is None else lambda: _silhouette_of_labelled_sample(
                gathered.rows(lab), labels[lab], self.n_labelled),
            uniformity=lambda: uniformity(gathered.rows(uni), t=t, sample_size=None),
            mean_cosine=table.geometry.mean_cosine, norms=table.geometry.norm_stats)


def _silhouette_of_labelled_sample(X: np.ndarray, labels: np.ndarray, n_labelled: int) -> float:
    """``_silhouette_of_labelled`` for the seeded sample X (m, d) of the labelled rows."""
    if n_labelled < 3:
        raise UndefinedMetric(f"only {n_labelled} item(s) have a label; a silhouette needs "
                              "at least 3")
    if not X.any():
        raise UndefinedMetric(f"all {X.shape[0]} labelled items have all-zero rows (one point)")
    return silhouette_labels(X, labels, sample_size=None)


def _table_for(E, stream: bool | None):
    """E as the analyze paths take it: a row-block source (streamed) or the table itself.

    A path is opened with ``collapse_kit.io.open_embeddings``; a source (or path) of fewer
    than ``stream.STREAM_MIN_ROWS`` rows is read whole unless stream=True; an array is
    streamed only with stream=True.
    """
    if stream not in (None, True, False):
        raise UserError(f"stream must be None (automatic), True or False; got {stream!r}")
    if isinstance(E, (str, os.PathLike)):
        from collapse_kit.io import open_embeddings

        E = open_embeddings(E, stream=stream).table
    if streaming.is_source(E):
        if stream is False or (stream is None and E.shape[0] < streaming.STREAM_MIN_ROWS):
            return E.read_all()
        return E
    return streaming.ArraySource(E) if stream else E


def analyze(E, *, labels=None, n_clusters: int = PAPER_N_CLUSTERS,
            kmeans_seed: int = PAPER_KMEANS_SEED, kmeans_n_init: int = PAPER_KMEANS_N_INIT,
            silhouette_sample: int | None = DEFAULT_SAMPLE_SIZE,
            uniformity_sample: int | None = DEFAULT_SAMPLE_SIZE, uniformity_t: float = 2.0,
            null_draws: int = 1, bootstrap: int = 0, confidence: float = 0.95,
            seed: int = 0, threads: int | None = 1, stream: bool | None = None,
            block_rows: int | None = None, device=None) -> dict[str, object]:
    """Every collapse metric of the table E (n_items, d), as one flat dict keyed by metric name.

    Adds, for every metric key K: ``K_gaussian`` (its value on ``null_draws`` seeded same-shape
    standard-Gaussian tables, averaged; ``K_gaussian_std`` too when null_draws > 1; 0 turns the
    null off) and, when ``bootstrap`` >= 2, ``K_ci_low``/``K_ci_high`` (re-centred percentile
    interval over that many item resamples at ``confidence``; see ``bootstrap_ci``). Also records the table's shape and every
    setting that changes a number (sample sizes actually used, seeds). Keys: docs/metrics.md.
    ``threads``: see ``compute_metrics``.

    Tables of millions of items: E may also be a row-block source (``collapse_kit.stream``) or
    the path of a checkpoint (``collapse_kit.io.open_embeddings``). ``stream=True`` computes
    every metric from blocks of ``block_rows`` rows (default 2**22 / d) in bounded memory
    (``compute_metrics_streamed``; its Gaussian null is generated block by block, its bootstrap
    resamples rows with exact multinomial weights); False reads the table whole; None (the
    default) streams a source or path of at least ``stream.STREAM_MIN_ROWS`` (10^6) rows and
    nothing else. ``streamed`` and ``stream_block_rows`` in the result say which path ran.
    ``device`` (a torch device such as "cuda"): the streamed path with its QR reductions, the
    O(n d^2) part, in torch float64 on that device (implies stream=True; ``device`` in the
    result); None: numpy on the CPU.

    >>> import numpy as np
    >>> r = analyze(np.random.default_rng(0).standard_normal((300, 8)), null_draws=0)
    >>> r["numerical_rank"], r["silhouette_sample_size"]
    (8, 300)
    """
    if device is not None and stream is False:
        raise UserError("a device runs the streamed path; drop stream=False or the device")
    table = _table_for(E, True if device is not None else stream)
    streamed = streaming.is_source(table)
    X = None if streamed else as_table(table)
    n, d = table.shape
    null_draws = check_positive_int(null_draws, "null_draws", minimum=0)
    bootstrap = check_positive_int(bootstrap, "bootstrap", minimum=0)
    if bootstrap == 1:
        raise UserError("bootstrap needs at least 2 resamples (or 0 to turn it off); got 1")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise UserError(f"confidence must be a float strictly between 0 and 1 (e.g. 0.95); "
                        f"got {confidence!r}")
    silhouette_sample = check_optional_sample(silhouette_sample, "silhouette_sample")
    uniformity_sample = check_optional_sample(uniformity_sample, "uniformity_sample")
    settings = dict(n_clusters=n_clusters, kmeans_seed=kmeans_seed, kmeans_n_init=kmeans_n_init,
                    silhouette_sample=silhouette_sample, uniformity_sample=uniformity_sample,
                    uniformity_t=uniformity_t, seed=seed, threads=threads)
    extra = () if labels is None else (np.asarray(labels),)

    if streamed:
        block_rows = stream_block_rows(d, block_rows)
        metric_fn = partial(compute_metrics_streamed, block_rows=block_rows, device=device,
                            **settings)
        values, counts, draws = _streamed(table, labels, groups=tuple(GROUPS),
                                          block_rows=block_rows, n_resamples=bootstrap,
                                          device=device, **settings)
        null_table = streaming.GaussianSource  # the same draws as gaussian_table, by blocks
    else:
        metric_fn = partial(compute_metrics, **settings)
        counts = {"n_constant_columns": int((np.ptp(X, axis=0) == 0).sum()),
                  "n_zero_rows": row_norm_stats(X)["n_zero_rows"]}
        values = metric_fn(X, *extra)
        null_table = gaussian_table
    result: dict[str, object] = {"n_items": n, "dim": d, **counts}
    result.update(values)
    n_labelled = None if labels is None else int(_labelled_rows(labels, n).sum())
    result.update(_settings(n, n_labelled, silhouette_sample, uniformity_sample, uniformity_t,
                            n_clusters, kmeans_seed, kmeans_n_init, seed, labels))
    result["streamed"] = streamed
    result["stream_block_rows"] = block_rows if streamed else None
    result["device"] = None if device is None else str(device)
    if null_draws:
        null = gaussian_null(metric_fn, (n, d), *extra, n_draws=null_draws, random_state=seed,
                             table_factory=null_table)
        for key, stats in null.items():
            result[f"{key}_gaussian"] = stats["mean"]
            if null_draws > 1:
                result[f"{key}_gaussian_std"] = stats["std"]
    result["null_draws"] = null_draws
    if bootstrap:
        if streamed:
            cis = bootstrap_intervals(draws, values, confidence=confidence)
        else:
            cis = bootstrap_ci(metric_fn, X, *extra, n_resamples=bootstrap,
                               confidence=confidence, random_state=seed, estimate=values)
        for key, ci in cis.items():
            result[f"{key}_ci_low"], result[f"{key}_ci_high"] = ci["low"], ci["high"]
    result["bootstrap_resamples"] = bootstrap
    result["bootstrap_confidence"] = confidence if bootstrap else None
    return result


def _settings(n, n_labelled, silhouette_sample, uniformity_sample, uniformity_t, n_clusters,
              kmeans_seed, kmeans_n_init, seed, labels) -> dict[str, object]:
    def used(sample, available):
        return available if sample is None else min(sample, available)

    out = {"silhouette_n_clusters": n_clusters, "kmeans_seed": kmeans_seed,
           "kmeans_n_init": kmeans_n_init, "silhouette_sample_size": used(silhouette_sample, n),
           "uniformity_sample_size": used(uniformity_sample, n), "uniformity_t": uniformity_t,
           "seed": seed}
    if labels is not None:
        out["silhouette_labels_n_items"] = used(silhouette_sample, n_labelled)
        out["silhouette_labels_n_classes"] = int(np.unique(np.asarray(labels)[np.asarray(labels) >= 0]).size)
    return out


# -- formatting: analyze ------------------------------------------------------------------------

def to_jsonable(result: dict) -> dict:
    """``result`` with numpy scalars as Python numbers and +/-inf or NaN as None (strict JSON)."""
    def plain(v):
        if isinstance(v, dict):  # a block of keys (e.g. the popularity groups head/torso/tail)
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [plain(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        return v
    return {k: plain(v) for k, v in result.items()}


def _fmt(v, key: str = "") -> str:
    """A value as the tables print it: 2 decimals for singular values, else 3 (4 for cosines)."""
    if v is None:
        return "-"
    if isinstance(v, (list, tuple, np.ndarray)):
        return " ".join(_fmt(x, key) for x in v)
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)) or (key in INTEGER_KEYS and float(v).is_integer()):
        return str(int(v))  # a Gaussian-null mean of an integer metric is a float
    if isinstance(v, (float, np.floating)) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    digits = 2 if key in ("top5_singular_values", "singular_value_variance") else \
        4 if key == "mean_cosine_similarity" else 3
    return f"{v:.{digits}f}"


def _header_lines(result: dict) -> list[tuple[str, str]]:
    """(label, text) pairs saying what was analysed; empty when there is no checkpoint metadata."""
    lines = []
    if result.get("checkpoint"):
        lines.append(("checkpoint", f"{result['checkpoint']} ({result.get('checkpoint_format')})"))
    if result.get("tensor"):
        lines.append(("tensor", f"{result['tensor']}: {result.get('tensor_reason')}"))
    shape = f"{result['n_items']} x {result['dim']}"
    if result.get("original_shape"):
        stored = " x ".join(str(s) for s in result["original_shape"])
        pad = "padding row dropped" if result.get("padding_row_dropped") else "no padding row dropped"
        shape += f" (stored {stored}; {pad}: {result.get('padding_reason')})"
    lines.append(("shape", shape))
    described = [f"{k} {result[k]}" for k in ("model", "stage", "dataset", "epoch") if result.get(k) is not None]
    if described:
        lines.append(("model", ", ".join(described)))
    return lines


def _notes(result: dict) -> str:
    n = result["n_items"]
    sil = result["silhouette_sample_size"]
    sil_text = f"all {n} items (exact)" if sil >= n else f"a seeded sample of {sil} of {n} items"
    uni = result["uniformity_sample_size"]
    uni_text = f"all {n} items" if uni >= n else f"a sample of {uni} of {n} items"
    null = (f"same-shape N(0,1) table, seed {result['seed']}, {result['null_draws']} draw(s)"
            if result["null_draws"] else "off")
    ci = (f"{result['bootstrap_resamples']} item resamples, {result['bootstrap_confidence']:.0%} "
          "percentile, re-centred on the value" if result["bootstrap_resamples"]
          else "off (use --bootstrap N)")
    streamed = ""
    if result.get("streamed"):  # KMeans saw only the silhouette's sample (docs/metrics.md)
        streamed = (f"; streamed in blocks of {result['stream_block_rows']} rows, KMeans fitted "
                    "on the silhouette's rows" + (", bootstrap by multinomial row weights"
                                                  if result["bootstrap_resamples"] else ""))
    return (f"silhouette: KMeans k={result['silhouette_n_clusters']}, seed {result['kmeans_seed']}, "
            f"n_init {result['kmeans_n_init']}, scored on {sil_text}; uniformity: t="
            f"{result['uniformity_t']:g}, {uni_text}; gaussian: {null}; CI: {ci}; "
            f"constant columns: {result['n_constant_columns']}, zero rows: {result['n_zero_rows']}"
            f"{streamed}")


def _metric_rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(group title, key, value, gaussian, CI) for every metric present in ``result``."""
    rows = []
    for group, keys in GROUPS.items():
        for key in keys:
            if key not in result:
                continue
            g = _fmt(result.get(f"{key}_gaussian"), key)
            if f"{key}_gaussian_std" in result:
                g += f" (sd {_fmt(result[f'{key}_gaussian_std'], key)})"
            ci = "-"
            if f"{key}_ci_low" in result:
                ci = f"[{_fmt(result[f'{key}_ci_low'], key)}, {_fmt(result[f'{key}_ci_high'], key)}]"
            value = "undefined" if key + UNDEFINED_SUFFIX in result else _fmt(result[key], key)
            rows.append((GROUP_TITLES[group], key, value, g, ci))
    return rows


def undefined_reasons(result: dict) -> dict[str, str]:
    """{metric key: why it has no value} for every undefined metric of a result, in order."""
    return {k[: -len(UNDEFINED_SUFFIX)]: v for k, v in result.items()
            if k.endswith(UNDEFINED_SUFFIX) and isinstance(v, str)}


def format_analysis(result: dict, fmt: str = "table") -> str:
    """``analyze``'s result (plus the CLI's checkpoint keys) as table, json, csv or markdown."""
    if fmt == "json":
        return json.dumps(to_jsonable(result), indent=2, allow_nan=False)
    if fmt == "csv":
        pairs = []
        flat = {}
        for key, value in to_jsonable(result).items():  # blocks as "block.key" rows
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        for key, value in flat.items():
            if isinstance(value, list):
                value = " ".join(repr(v) for v in value)
            pairs.append([key, "" if value is None else value])
        return Table(columns=["key", "value"], rows=pairs).render("csv")
    rows = _metric_rows(result)
    if fmt == "markdown":
        lines = [f"- **{label}**: {text}" for label, text in _header_lines(result)]
        ci_title = _ci_title(result)
        lines += ["", Table(columns=["group", "metric", "value", "Gaussian", ci_title],
                            rows=[[g, f"`{k}`", v, gv, ci] for g, k, v, gv, ci in rows]
                            ).render("markdown")]
        undefined_title, undefined_line = "Undefined for this table:", "- `{key}`: {why}"
    elif fmt == "table":
        width = max(len(label) for label, _ in _header_lines(result))
        lines = [f"{label:<{width}}  {text}" for label, text in _header_lines(result)]
        kw = max(len(k) for _, k, *_ in rows) + 2
        vw = max(len(v) for *_, v, _, _ in rows)
        gw = max(len(gv) for *_, gv, _ in rows)
        lines += ["", f"{'metric':<{kw}}  {'value':<{vw}}  {'gaussian':<{gw}}  {_ci_title(result)}"]
        current = None
        for group, key, value, gv, ci in rows:
            if group != current:
                lines.append(group)
                current = group
            lines.append(f"  {key:<{kw - 2}}  {value:<{vw}}  {gv:<{gw}}  {ci}".rstrip())
        undefined_title, undefined_line = "undefined for this table:", "  {key}: {why}"
    else:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    undefined = undefined_reasons(result)
    if undefined:
        lines += ["", undefined_title]
        lines += [undefined_line.format(key=k, why=why) for k, why in undefined.items()]
    lines += ["", _notes(result)]
    return "\n".join(lines)


def _ci_title(result: dict) -> str:
    conf = result.get("bootstrap_confidence")
    return f"{conf:.0%} CI" if conf else "CI"


# -- formatting: compare (the Table 5 layout) ---------------------------------------------------

COMPARE_COLUMNS = (("top5_singular_values", "Top 5 Singular Values"),
                   ("singular_value_variance", "SV Variance"),
                   ("singular_value_entropy", "SV Entropy"),
                   ("covariance_entropy", "Cov. Entropy"),
                   ("isotropy", "Isotropy"),
                   ("kl_to_gaussian", "KL to Gaussian"),
                   ("silhouette", "Silhouette"))
CORRECTED_COLUMNS = (("kl_to_gaussian_logdet", "KL (log-det)"),
                     ("effective_rank", "Eff. Rank"))


def compare_metrics(E, *, corrected: bool = False, **settings) -> dict[str, object]:
    """The metrics of one ``compare`` row: Table 5's, plus two corrected ones if asked."""
    row = compute_metrics(E, groups=("paper", "corrected") if corrected else ("paper",), **settings)
    if corrected:
        row["effective_rank"] = effective_rank(E)
    return row


def comparison_cells(metrics: dict, *, corrected: bool = False,
                     bracket_top5: bool = True) -> list[str]:
    """One ``compare`` row's cells in the Table 5 column order; a metric undefined for the table
    (``K_undefined`` in ``metrics``) prints as "n/a". The top 5 singular values are one cell,
    ``[a, b, ...]`` with ``bracket_top5`` and space-separated without (CSV)."""
    cells = []
    for key, _ in COMPARE_COLUMNS + (CORRECTED_COLUMNS if corrected else ()):
        value = metrics.get(key)
        if key + UNDEFINED_SUFFIX in metrics:
            cells.append("n/a")  # undefined for this table; the reason is in metrics[K_undefined]
        elif key == "top5_singular_values" and value is not None and bracket_top5:
            cells.append("[" + ", ".join(_fmt(v, key) for v in value) + "]")
        else:
            cells.append(_fmt(value, key))
    return cells


def comparison_table(rows: Sequence[tuple[str, dict]], fmt: str = "markdown", *,
                     corrected: bool = False) -> Table:
    """Rows of (name, metrics) in the paper's Table 5 layout, for rendering as ``fmt``: CSV
    headers are the metric keys and its top-5 cell is space-separated, the other formats use
    the column titles and a bracketed list."""
    columns = COMPARE_COLUMNS + (CORRECTED_COLUMNS if corrected else ())
    csv_ = fmt == "csv"
    header = ["model" if csv_ else "Model"] + [key if csv_ else title for key, title in columns]
    return Table(columns=header, rows=[
        [name] + comparison_cells(m, corrected=corrected, bracket_top5=not csv_)
        for name, m in rows])


def format_comparison(rows: Sequence[tuple[str, dict]], fmt: str = "markdown", *,
                      corrected: bool = False) -> str:
    """Rows of (name, metrics) in the paper's Table 5 layout, as markdown, csv or latex."""
    if fmt not in COMPARE_FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(COMPARE_FORMATS)}")
    return comparison_table(rows, fmt, corrected=corrected).render(fmt)
