"""Collapse and item popularity: is popularity what the table's norms and leading directions hold?

Item popularity is memorised in the leading spectrum of embeddings (ReSN, WSDM 2025; the
popularity direction of BPR-style tables; LogDet dimensional-collapse work, NeurIPS 2023). These
pure functions give the numbers to see it in a table E (n_items, d) with a popularity vector p
(n_items,), e.g. each item's interactions in the training sequences:

* ``popularity_norm_correlation``: Spearman and Pearson correlation between p and the row norms;
* ``popularity_direction_correlation``: Spearman correlation between p and the projection of
  the rows on each of the top-k singular directions of E; the largest |rho| and its direction;
* ``popularity_groups``: head / torso / tail items by popularity rank (terciles by default), so
  any collapse metric can be computed per group;
* ``correlation_interval``: a seeded percentile bootstrap interval over items for a correlation.

A correlation is undefined (``UndefinedMetric``) when one side is constant (every item equally
popular, every row of the same norm): there is nothing to rank. Pearson is computed on p as
given (counts), Spearman on ranks with ties averaged (scipy's convention).
"""
from __future__ import annotations

import numpy as np

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics._validation import as_table, check_positive_int, power_of_two_scaled

DEFAULT_DIRECTIONS = 10
TERCILES = (1 / 3, 2 / 3)
GROUP_NAMES = ("head", "torso", "tail")


def check_popularity(popularity, n_items: int) -> np.ndarray:
    """``popularity`` as float64 (n_items,), checked: 1-D, one value per row, finite, >= 0."""
    p = np.asarray(popularity)
    if p.dtype.kind not in "iuf":
        raise UserError(f"popularity must be numbers (counts); got dtype {p.dtype}")
    p = p.astype(np.float64)
    if p.ndim != 1 or p.shape[0] != n_items:
        raise UserError(f"popularity needs one value per item of the table ({n_items}); got shape "
                        f"{p.shape}: is it for this table's dataset?")
    if not np.isfinite(p).all() or (p < 0).any():
        raise UserError("popularity values must be finite counts >= 0")
    return p


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties averaged (scipy.stats.rankdata's 'average')."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    starts = np.r_[0, np.flatnonzero(sx[1:] != sx[:-1]) + 1]
    ends = np.r_[starts[1:], sx.size]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray, what: str) -> float:
    x = x - x.mean()
    y = y - y.mean()
    sx, sy = np.sqrt((x * x).sum()), np.sqrt((y * y).sum())
    if sx == 0 or sy == 0:
        side = "the popularity" if sy == 0 else what
        raise UndefinedMetric(f"a correlation with {what} is undefined: {side} is the same for "
                              "every item")
    return float(np.clip((x * y).sum() / (sx * sy), -1.0, 1.0))


def correlation(x, y, *, method: str = "spearman", what: str = "the values") -> float:
    """Spearman (ranks, ties averaged) or Pearson correlation of two 1-D arrays."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if method == "spearman":
        return _pearson(_ranks(x), _ranks(y), what)
    if method == "pearson":
        return _pearson(x, y, what)
    raise UserError(f"unknown correlation method {method!r}; choose spearman or pearson")


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean row norms of X (float64), taken on the table rescaled by a power of two."""
    Xs, _ = power_of_two_scaled(X)  # a global power of two: the correlations do not see it
    return np.linalg.norm(Xs, axis=1)


def popularity_norm_correlation(E, popularity) -> dict[str, float]:
    """``{"spearman", "pearson"}`` correlations between item popularity and the row norms of E.

    Range [-1, 1]. Near +1: popular items have the longest vectors, so a dot-product scorer
    favours them whatever the user (the norm encodes popularity); near 0: the norm says nothing
    about popularity. Scale-free, rotation-invariant. A table whose norms are a strictly
    increasing function of popularity has Spearman 1.
    Reference: Chen et al., "Revisiting popularity bias... ReSN" (WSDM 2025).
    """
    X = as_table(E)
    p = check_popularity(popularity, X.shape[0])
    norms = row_norms(X)
    return {m: correlation(norms, p, method=m, what="the row norm") for m in ("spearman", "pearson")}


def top_directions(E, k: int = DEFAULT_DIRECTIONS) -> tuple[np.ndarray, np.ndarray]:
    """The projections (n_items, k') of the rows of E on its top k' = min(k, rank) right
    singular vectors, and their singular values. E is taken as it is (not centred): a
    popularity direction is usually an offset that centring would remove. Each direction's
    sign is fixed so that the projections sum to >= 0 (an SVD's signs are arbitrary)."""
    k = check_positive_int(k, "k")
    X = as_table(E)
    Xs, _ = power_of_two_scaled(X)
    _, s, vt = np.linalg.svd(Xs, full_matrices=False)
    keep = min(k, int((s > max(X.shape) * np.finfo(np.float64).eps * s[0]).sum()))
    proj = Xs @ vt[:keep].T
    signs = np.where(proj.sum(axis=0) < 0, -1.0, 1.0)
    return proj * signs, s[:keep]


def popularity_direction_correlation(E, popularity, *, k: int = DEFAULT_DIRECTIONS) -> dict:
    """Spearman correlation between popularity and the projection on each top-k direction.

    Returns ``{"spearman": rho, "index": i, "per_direction": [rho_1, ..., rho_k']}``: rho is
    the correlation of largest |rho| among the top k' = min(k, numerical rank) singular
    directions of E (as it is), i its 1-based index (1 = the top singular direction). Each
    direction is oriented so that its projections sum to >= 0, so the sign of rho reads:
    positive = popular items lie further along the direction most items share. |rho| near 1 at
    index 1: popularity is the table's dominant direction. Directions on which every item
    projects the same have no correlation (None in ``per_direction``); undefined when all do.
    References: ReSN (WSDM 2025); Kang et al. on the popularity direction of BPR embeddings.
    """
    X = as_table(E)
    p = check_popularity(popularity, X.shape[0])
    proj, _ = top_directions(X, k)
    per = []
    for j in range(proj.shape[1]):
        try:
            per.append(correlation(proj[:, j], p, method="spearman",
                                   what=f"the projection on direction {j + 1}"))
        except UndefinedMetric:
            if np.ptp(p) == 0:
                raise
            per.append(None)
    defined = [(abs(r), j) for j, r in enumerate(per) if r is not None]
    if not defined:
        raise UndefinedMetric("every row projects the same on each top direction; there is no "
                              "direction to correlate with popularity")
    _, best = max(defined, key=lambda t: (t[0], -t[1]))  # ties: the leading direction
    return {"spearman": per[best], "index": best + 1, "per_direction": per}


def popularity_groups(popularity, split=TERCILES) -> np.ndarray:
    """Group of each item by popularity rank: 0 = head, 1 = torso, 2 = tail, (n_items,) int.

    Items are ordered by popularity, most popular first (ties: lower row first); ``split`` =
    (a, b), 0 < a < b < 1, puts the first round(a n) items in the head, the next up to round(b n)
    in the torso (halves rounded up), the rest in the tail. Default terciles. Each group gets at least one item.
    """
    p = np.asarray(popularity, dtype=np.float64)
    if p.ndim != 1 or p.size < 3:
        raise UserError(f"head / torso / tail need at least 3 items; got {p.size}")
    try:
        a, b = (float(v) for v in split)
    except (TypeError, ValueError):
        raise UserError(f"a popularity split is two item shares a,b with 0 < a < b < 1 (e.g. "
                        f"0.2,0.5); got {split!r}") from None
    if not 0 < a < b < 1:
        raise UserError(f"a popularity split is two item shares a,b with 0 < a < b < 1 (e.g. "
                        f"0.2,0.5); got {a:g},{b:g}")
    n = p.size
    cut1 = min(max(int(np.floor(a * n + 0.5)), 1), n - 2)   # round half up
    cut2 = min(max(int(np.floor(b * n + 0.5)), cut1 + 1), n - 1)
    order = np.argsort(-p, kind="stable")
    groups = np.empty(n, dtype=np.int64)
    groups[order[:cut1]], groups[order[cut1:cut2]], groups[order[cut2:]] = 0, 1, 2
    return groups


def correlation_interval(x, y, *, method: str = "spearman", n_resamples: int = 200,
                         confidence: float = 0.95, random_state=0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``correlation(x, y)`` over items (pairs resampled with
    replacement, seeded). Resamples where one side is constant are skipped; undefined
    (``UndefinedMetric``) if more than half are."""
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=2)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise UserError(f"confidence must be a float strictly between 0 and 1; got {confidence!r}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    values = []
    for _ in range(n_resamples):
        rows = rng.integers(0, x.size, size=x.size)
        try:
            values.append(correlation(x[rows], y[rows], method=method))
        except UndefinedMetric:
            continue
    if 2 * len(values) < n_resamples:
        raise UndefinedMetric("most bootstrap resamples have a constant side; no interval")
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(values, alpha, method="lower")),
            float(np.quantile(values, 1.0 - alpha, method="higher")))
