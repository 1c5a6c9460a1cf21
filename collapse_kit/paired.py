"""Paired significance between two models on the same users (``evaluate A --against B``).

Table 2 reports a mean +- sd over seeds, which cannot tell whether model A beats model B on the
same users. Here each user u has a per-user metric under A and under B (HR@k in {0, 100},
NDCG@k in [0, 100]); with several seed pairs (A_i against B_i) the user's difference is the mean
over the pairs, d_u = mean_i (A_i(u) - B_i(u)). Then

* ``delta`` = mean_u d_u (equals the difference of the two models' per-user means);
* ``ci95`` = the 2.5 and 97.5 percentiles of delta over ``n_resamples`` seeded resamples of the
  users with replacement (a paired bootstrap: a resampled user keeps both models' values);
* ``p_wilcoxon`` = the two-sided Wilcoxon signed-rank p-value of the d_u (scipy's
  ``wilcoxon``, users with d_u = 0 dropped, as its default ``zero_method="wilcox"``); None
  with the reason when every d_u is 0.
"""
from __future__ import annotations

import numpy as np

from collapse_kit.errors import UserError

RESAMPLE_CHUNK = 64  # resamples drawn at once: 64 x n_users indices


def paired_differences(a, b) -> np.ndarray:
    """d_u: per-user differences A - B averaged over the pairs; ``a`` and ``b`` are lists (one
    entry per pair) of per-user arrays of equal length."""
    a = [np.asarray(x, dtype=np.float64) for x in a]
    b = [np.asarray(x, dtype=np.float64) for x in b]
    if not a or len(a) != len(b):
        raise UserError(f"a paired comparison needs as many B runs as A runs; got {len(a)} and "
                        f"{len(b)}")
    shapes = {x.shape for x in a + b}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise UserError(f"every run needs one value per user, the same users; got shapes "
                        f"{sorted(shapes)}")
    return np.mean([x - y for x, y in zip(a, b)], axis=0)


def paired_comparison(a, b, *, n_resamples: int = 2000, confidence: float = 0.95,
                      random_state=0) -> dict[str, object]:
    """``{"delta", "ci95": [lo, hi], "p_wilcoxon", "a", "b"}`` for per-user values ``a`` and
    ``b`` (lists over seed pairs of (n_users,) arrays; see the module docstring)."""
    from scipy.stats import wilcoxon

    if not (isinstance(n_resamples, int) and n_resamples >= 2):
        raise UserError(f"n_resamples must be an integer >= 2; got {n_resamples!r}")
    d = paired_differences(a, b)
    n = d.size
    if n < 2:
        raise UserError(f"a paired comparison needs at least 2 users; got {n}")
    rng = np.random.default_rng(random_state)
    means = []
    for start in range(0, n_resamples, RESAMPLE_CHUNK):
        m = min(RESAMPLE_CHUNK, n_resamples - start)
        means.append(d[rng.integers(0, n, size=(m, n))].mean(axis=1))
    means = np.concatenate(means)
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, object] = {
        "delta": float(d.mean()),
        "ci95": [float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))],
        "a": float(np.mean([np.mean(x) for x in a])),
        "b": float(np.mean([np.mean(x) for x in b])),
    }
    if not d.any():
        out["p_wilcoxon"] = None
        out["p_wilcoxon_undefined"] = "every user's difference is 0: the models rank alike"
    else:
        out["p_wilcoxon"] = float(wilcoxon(d, zero_method="wilcox").pvalue)
    return out
