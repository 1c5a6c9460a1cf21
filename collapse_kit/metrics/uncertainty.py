"""Uncertainty for any metric: a seeded same-shape Gaussian null and bootstrap intervals over items.

Both take ``metric_fn``: a function from a table (n_items, d) to a dict of named values (floats,
ints or 1-D arrays such as the top-5 singular values). ``collapse_kit.analyze.compute_metrics``
is one; so is ``lambda E: {"isotropy": isotropy(E)}``.

* The null answers "what does a table of pure noise of this shape get?". Several metrics (the
  isotropy score, both entropies, the KL, the top singular values) depend strongly on
  n_items / d, so a raw value means little without it.
* The bootstrap answers "how much would the value move with a different sample of items?":
  rows are resampled with replacement and the metric recomputed. Percentile intervals; note that
  duplicated rows bias some metrics (e.g. lower the effective n), so read the interval as a
  spread, not as an exact coverage guarantee.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from collapse_kit.errors import UserError
from collapse_kit.metrics._validation import as_table, check_positive_int
from collapse_kit.metrics.gaussian import gaussian_table

MetricFn = Callable[..., Mapping[str, object]]


def _stack(draws: list[Mapping[str, object]]) -> dict[str, np.ndarray]:
    """{key: array of shape (n_draws, ...)} over the keys every draw has."""
    keys = [k for k in draws[0] if all(k in d for d in draws)]
    return {k: np.asarray([np.asarray(d[k], dtype=np.float64) for d in draws]) for k in keys}


def gaussian_null(metric_fn: MetricFn, shape: tuple[int, int], *extra, n_draws: int = 1,
                  random_state=0) -> dict[str, dict[str, object]]:
    """``metric_fn`` on ``n_draws`` seeded standard-Gaussian tables of ``shape`` (n_items, d).

    ``extra`` arrays (e.g. item labels) are passed through unchanged: metric_fn(G, *extra).
    Returns {key: {"mean": value, "std": value}} (std over draws, ddof 1; 0.0 for one draw;
    +inf where a draw is +inf). Draw i uses the seed sequence (random_state, i), so adding draws
    never changes the earlier ones.
    """
    n_draws = check_positive_int(n_draws, "n_draws")
    n, d = shape
    draws = []
    for i in range(n_draws):
        seed = np.random.SeedSequence([int(random_state), i])
        draws.append(metric_fn(gaussian_table(n, d, random_state=seed), *extra))
    out = {}
    for key, values in _stack(draws).items():
        if n_draws == 1:
            std = np.zeros_like(values[0])
        else:
            with np.errstate(invalid="ignore"):  # inf - inf when a draw is +inf
                std = values.std(axis=0, ddof=1)
            std = np.where(np.isfinite(values).all(axis=0), std, np.inf)
        out[key] = {"mean": _plain(values.mean(axis=0)), "std": _plain(std)}
    return out


def bootstrap_ci(metric_fn: MetricFn, E, *extra, n_resamples: int = 100,
                 confidence: float = 0.95, random_state=0) -> dict[str, dict[str, object]]:
    """Percentile bootstrap intervals of ``metric_fn`` over the rows (items) of E.

    Each of ``n_resamples`` resamples draws n_items row indices with replacement (seeded with
    ``random_state``) and calls metric_fn(E[rows], *(a[rows] for a in extra)), so per-item arrays
    such as labels stay aligned. Returns {key: {"low": value, "high": value}}: the
    (1 - confidence)/2 and (1 + confidence)/2 quantiles over resamples, taken without
    interpolation (so +inf values stay meaningful).
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
    rng = np.random.default_rng(random_state)
    draws = []
    for _ in range(n_resamples):
        rows = rng.integers(0, X.shape[0], size=X.shape[0])
        draws.append(metric_fn(X[rows], *(a[rows] for a in extra)))
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for key, values in _stack(draws).items():
        out[key] = {"low": _plain(np.quantile(values, alpha, axis=0, method="lower")),
                    "high": _plain(np.quantile(values, 1.0 - alpha, axis=0, method="higher"))}
    return out


def _plain(a: np.ndarray):
    """A 0-d array as a Python float, otherwise a list of floats."""
    a = np.asarray(a, dtype=np.float64)
    return float(a) if a.ndim == 0 else [float(v) for v in a]
