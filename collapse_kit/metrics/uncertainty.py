"""Uncertainty for any metric: a seeded same-shape Gaussian null and bootstrap intervals over items.

Both take ``metric_fn``: a function from a table (n_items, d) to a dict of named values (floats,
ints or 1-D arrays such as the top-5 singular values). ``collapse_kit.analyze.compute_metrics``
is one; so is ``lambda E: {"isotropy": isotropy(E)}``.

* The null answers "what does a table of pure noise of this shape get?". Several metrics (the
  isotropy score, both entropies, the KL, the top singular values) depend strongly on
  n_items / d, so a raw value means little without it.
* The bootstrap answers "how much would the value move with a different sample of items?":
  rows are resampled with replacement and the metric recomputed. Percentile intervals, re-centred
  on the estimate because duplicated rows shift n-dependent metrics (see ``bootstrap_ci``); read
  them as a spread, not as an exact coverage guarantee.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.metrics._validation import as_table, check_positive_int
from collapse_kit.metrics.gaussian import gaussian_table

MetricFn = Callable[..., Mapping[str, object]]


def _stack(draws: list[Mapping[str, object]]) -> dict[str, np.ndarray | None]:
    """{key: array of shape (n_draws, ...)} over the numeric keys every draw has.

    None for a key that some draw leaves undefined (None); text values (the reasons that
    ``compute_metrics`` gives under ``K_undefined``) are skipped.
    """
    keys = [k for k in draws[0] if all(k in d and not isinstance(d[k], str) for d in draws)]
    return {k: None if any(d[k] is None for d in draws)
            else np.asarray([np.asarray(d[k], dtype=np.float64) for d in draws]) for k in keys}


def gaussian_null(metric_fn: MetricFn, shape: tuple[int, int], *extra, n_draws: int = 1,
                  random_state=0, table_factory: Callable = gaussian_table
                  ) -> dict[str, dict[str, object]]:
    """``metric_fn`` on ``n_draws`` seeded standard-Gaussian tables of ``shape`` (n_items, d).

    ``extra`` arrays (e.g. item labels) are passed through unchanged: metric_fn(G, *extra).
    Returns {key: {"mean": value, "std": value}} (std over draws, ddof 1; 0.0 for one draw;
    +inf where a draw is +inf; None where a draw is None, i.e. undefined). Draw i uses the seed sequence (random_state, i), so adding draws
    never changes the earlier ones. ``table_factory(n, d, random_state=seed)`` makes each draw:
    ``gaussian_table``, or ``collapse_kit.stream.GaussianSource`` (the same numbers, generated
    block by block for a streamed ``metric_fn``).
    """
    n_draws = check_positive_int(n_draws, "n_draws")
    n, d = shape
    draws = []
    for i in range(n_draws):
        seed = np.random.SeedSequence([int(random_state), i])
        draws.append(metric_fn(table_factory(n, d, random_state=seed), *extra))
    out = {}
    for key, values in _stack(draws).items():
        if values is None:  # undefined for this shape (e.g. isotropy with n_items <= d)
            out[key] = {"mean": None, "std": None}
            continue
        if n_draws == 1:
            std = np.zeros_like(values[0])
        else:
            with np.errstate(invalid="ignore"):  # inf - inf when a draw is +inf
                std = values.std(axis=0, ddof=1)
            std = np.where(np.isfinite(values).all(axis=0), std, np.inf)
        out[key] = {"mean": _plain(values.mean(axis=0)), "std": _plain(std)}
    return out


def bootstrap_ci(metric_fn: MetricFn, E, *extra, n_resamples: int = 100,
                 confidence: float = 0.95, random_state=0,
                 estimate: Mapping[str, object] | None = None) -> dict[str, dict[str, object]]:
    """Re-centred percentile bootstrap intervals of ``metric_fn`` over the rows (items) of E.

    1. Each of ``n_resamples`` resamples draws n_items row indices with replacement (seeded
       with ``random_state``) and calls metric_fn(E[rows], *(a[rows] for a in extra)), so
       per-item arrays such as labels stay aligned.
    2. For each key, q_lo and q_hi are the (1 - confidence)/2 and (1 + confidence)/2 quantiles
       of the resampled values (no interpolation, so +inf values stay meaningful).
    3. The interval is moved so that the resamples' median sits on the estimate theta
       (metric_fn(E, *extra), or ``estimate`` if given): [q_lo + shift, q_hi + shift],
       shift = theta - median. It always contains theta.

    Why step 3: a resample repeats about a third of the items, and that alone shifts every
    metric that depends on the number of distinct items. On the authors' ML-100K table the plain
    percentile interval of the isotropy is [0.034, 0.041] around an estimate of 0.055, and that
    of the log-det KL [13.8, 14.7] around 9.94. The spread is informative; the location is an
    artefact of resampling. Returns {key: {"low", "high", "shift"}}, lists for 1-D values;
    all None for a key that the estimate or any resample leaves undefined (None).
    """
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=2)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise UserError(f"confidence must be a float strictly between 0 and 1; got {confidence!r}")
    X = as_table(E)
    extra = [np.asarray(a) for a in extra]
    for a in extra:
        if a.shape[:1] != X.shape[:1]:
            raise UserError(f"every extra array needs one entry per row of E ({X.shape[0]}); "
                            f"got shape {a.shape}")
    if estimate is None:
        estimate = metric_fn(X, *extra)
    rng = np.random.default_rng(random_state)
    draws = []
    for _ in range(n_resamples):
        rows = rng.integers(0, X.shape[0], size=X.shape[0])
        draws.append(metric_fn(X[rows], *(a[rows] for a in extra)))
    return bootstrap_intervals(draws, estimate, confidence=confidence)


def bootstrap_intervals(draws: list[Mapping[str, object]], estimate: Mapping[str, object], *,
                        confidence: float = 0.95) -> dict[str, dict[str, object]]:
    """Steps 2 and 3 of ``bootstrap_ci``: re-centred percentile intervals from the metric
    values of the resamples (``draws``, one dict per resample) around ``estimate``.

    Shared by ``bootstrap_ci`` and the streamed bootstrap (``collapse_kit.analyze``), which
    makes its resamples differently. Returns {key: {"low", "high", "shift"}} for every key of
    ``estimate`` that the draws have; all None where the estimate or a draw is None.
    """
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for key, values in _stack(draws).items():
        if key not in estimate:
            continue
        if values is None or estimate[key] is None:  # undefined for the table or a resample
            out[key] = {"low": None, "high": None, "shift": None}
            continue
        theta = np.asarray(estimate[key], dtype=np.float64)
        low = np.quantile(values, alpha, axis=0, method="lower")
        high = np.quantile(values, 1.0 - alpha, axis=0, method="higher")
        median = np.quantile(values, 0.5, axis=0, method="nearest")
        with np.errstate(invalid="ignore"):  # inf - inf gives nan, handled below
            shift = theta - median
        # With theta or the median infinite there is no meaningful shift: keep the plain
        # interval, widened to include theta.
        finite = np.isfinite(shift)
        shift = np.where(finite, shift, 0.0)
        low = np.where(finite, low + shift, np.minimum(low, theta))
        high = np.where(finite, high + shift, np.maximum(high, theta))
        out[key] = {"low": _plain(low), "high": _plain(high), "shift": _plain(shift)}
    return out


def _plain(a: np.ndarray):
    """A 0-d array as a Python float, otherwise a list of floats."""
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else [float(v) for v in a]
