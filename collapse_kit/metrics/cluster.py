"""Cluster structure of an item-embedding table E (n_items, d): silhouette scores.

``silhouette`` is the ADRec paper's (against the table's own KMeans clusters); ``silhouette_labels``
is the corrected reading (against real labels such as genres). Both use Euclidean distance on the
raw table (rescaled by an exact power of two when its entries are far from 1, which changes no
cluster and no silhouette but keeps float32 KMeans from overflowing or underflowing). Silhouette
costs O(m^2 d) time for m scored items, so above ``sample_size`` items a seeded sample is scored
(in chunks of at most ``WORKING_MEMORY_MB``; never an n x n matrix).

Undefined cases raise UndefinedMetric (a UserError) before sklearn is called, so no sklearn
warning reaches the user: fewer items than clusters, fewer distinct rows than clusters (a
collapsed table), fewer than 2 or more than m - 1 labels among m scored items, and scored rows
that all coincide (every distance 0: each silhouette would be 0/0).
"""
from __future__ import annotations

import warnings

import numpy as np

from collapse_kit.errors import UndefinedMetric, UserError
from collapse_kit.metrics._threads import small_table_threads
from collapse_kit.metrics._validation import (
    as_table, check_optional_sample, check_positive_int, power_of_two_scaled, sample_rows)

# Defaults of the authors' notebook: KMeans(n_clusters=16, random_state=42).
PAPER_N_CLUSTERS = 16
PAPER_KMEANS_SEED = 42
# sklearn >= 1.4 resolves n_init='auto' to 1 for k-means++; the notebook's 0.013 on the shipped
# ML-100K table needs n_init=1 (the pre-1.4 default n_init=10 gives 0.0122 -> 0.012).
PAPER_KMEANS_N_INIT = 1
DEFAULT_SAMPLE_SIZE = 10_000
# Cap on sklearn's distance chunks (its default, 1 GB, would hold a 10k x 10k matrix at once).
WORKING_MEMORY_MB = 64


def kmeans_labels(E, *, n_clusters: int = PAPER_N_CLUSTERS, random_state: int = PAPER_KMEANS_SEED,
                  n_init: int = PAPER_KMEANS_N_INIT) -> np.ndarray:
    """KMeans (k-means++, Lloyd) cluster index of every row of E, shape (n_items,).

    Runs on E cast to float32, as the authors' notebook did (their table was a float32 tensor);
    it is also about 1.5x faster than float64 and gives the same clusters on their checkpoint.
    Raises UndefinedMetric when n_clusters >= n_items or when the float32 table has fewer
    distinct rows than n_clusters (KMeans cannot form that many clusters).
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    X = as_table(E)
    n_clusters = check_positive_int(n_clusters, "n_clusters", minimum=2)
    n_init = check_positive_int(n_init, "n_init")
    if n_clusters >= X.shape[0]:
        raise UndefinedMetric(f"n_clusters={n_clusters} must be below n_items={X.shape[0]}: "
                              "KMeans needs more items than clusters (lower --clusters)")
    X32 = power_of_two_scaled(X)[0].astype(np.float32)  # (n, d)
    distinct = _distinct_rows_below(X32, n_clusters)
    if distinct is not None:
        raise UndefinedMetric(_too_few_distinct(distinct, n_clusters))
    km = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init)
    with small_table_threads(X.size), warnings.catch_warnings():
        # Raised only when KMeans finds fewer distinct clusters than asked; checked below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(X32)
    found = np.unique(labels).size
    if found < n_clusters:
        raise UndefinedMetric(_too_few_distinct(found, n_clusters, what="clusters found"))
    return labels


def _distinct_rows_below(X: np.ndarray, k: int) -> int | None:
    """The number of distinct rows of X (n, d) if it is below k, else None.

    One column with k distinct values settles it (the usual case, O(n log n)); only otherwise
    are whole rows compared.
    """
    if any(np.unique(X[:, j]).size >= k for j in range(X.shape[1])):
        return None
    m = np.unique(X, axis=0).shape[0]
    return m if m < k else None


def _too_few_distinct(m: int, k: int, what: str = "distinct rows") -> str:
    if m == 1 and what == "distinct rows":
        return (f"every row of the table is the same point (complete collapse), so KMeans "
                f"cannot form n_clusters={k} clusters")
    return (f"the table has only {m} {what}, fewer than n_clusters={k}, so KMeans cannot form "
            f"{k} clusters")


def _silhouette(X: np.ndarray, labels: np.ndarray, sample_size, random_state) -> float:
    from sklearn import config_context
    from sklearn.metrics import silhouette_score

    idx = sample_rows(X.shape[0], sample_size, random_state)
    if idx is not None:
        X, labels = X[idx], labels[idx]
    n_labels = np.unique(labels).size
    if not 2 <= n_labels <= X.shape[0] - 1:
        raise UndefinedMetric(
            f"silhouette needs between 2 and n_samples - 1 = {X.shape[0] - 1} distinct labels among "
            f"the scored items; got {n_labels} (use more items or fewer classes)")
    if (X.max(axis=0) == X.min(axis=0)).all():
        raise UndefinedMetric(f"all {X.shape[0]} scored rows are the same point, so every distance "
                              "is 0 and each silhouette (b - a) / max(a, b) is 0/0")
    X, _ = power_of_two_scaled(X)  # squared distances stay finite and non-zero
    with config_context(working_memory=WORKING_MEMORY_MB), small_table_threads(X.size):
        return float(silhouette_score(X, labels, metric="euclidean"))


def silhouette(E, *, n_clusters: int = PAPER_N_CLUSTERS, random_state: int = PAPER_KMEANS_SEED,
               n_init: int = PAPER_KMEANS_N_INIT, sample_size: int | None = DEFAULT_SAMPLE_SIZE,
               sample_seed=0) -> float:
    """Paper: mean silhouette of the rows of E against its own KMeans clusters.

    KMeans(n_clusters=16, random_state=42, n_init=1) runs on every row of the raw table; the
    silhouette (b - a) / max(a, b) is then averaged over all rows, or, when n_items exceeds
    ``sample_size``, over ``sample_size`` rows drawn without replacement with ``sample_seed``
    (``None``: never sample). Range [-1, 1]; near 0 means no cluster structure (a Gaussian table
    gets about 0.004). It is unsound as a collapse measure: KMeans always finds 16 clusters, so
    the score grades the table's clusterability, not agreement with anything real. Prefer
    ``silhouette_labels``. Not invariant to row order (KMeans' seeding depends on it).
    Undefined (UndefinedMetric) for a table with n_clusters items or fewer, or with fewer than
    n_clusters distinct rows (a collapsed table: KMeans cannot find 16 clusters in 3 points).
    Reference: Rousseeuw (1987); Li et al., ADRec (KDD 2025), embedding notebook.
    """
    X = as_table(E)
    sample_size = check_optional_sample(sample_size, "sample_size")
    labels = kmeans_labels(X, n_clusters=n_clusters, random_state=random_state, n_init=n_init)
    return _silhouette(X, labels, sample_size, sample_seed)


def silhouette_labels(E, labels, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE,
                      random_state=0) -> float:
    """Corrected: mean silhouette of the rows of E against given labels (e.g. each item's genre).

    ``labels`` has shape (n_items,), one class per row (any hashable values). Same distance,
    range and sampling rule as ``silhouette``. Higher means items of the same class lie closer
    together than items of different classes: structure that the training signal put there, which
    the paper's KMeans version cannot tell apart from arbitrary clumps. Invariant to row
    permutations, rotations and global scale (up to sampling). Undefined (UndefinedMetric)
    with fewer than 2 classes among the scored items, or when the scored rows all coincide.
    Reference: Rousseeuw (1987).
    """
    X = as_table(E)
    labels = np.asarray(labels)
    if labels.shape != (X.shape[0],):
        raise UserError(f"labels must have shape ({X.shape[0]},), one per row of E; got {labels.shape}")
    sample_size = check_optional_sample(sample_size, "sample_size")
    return _silhouette(X, labels, sample_size, random_state)


def knn_label_agreement(E, labels, *, k: int = 10) -> float:
    """Mean share of each labelled item's ``k`` nearest neighbours (cosine similarity of the
    rows, the item itself excluded) that share a label with it, in [0, 1].

    ``labels``: (n_items,) class per row (-1 = unlabelled, neither scored nor counted as a
    neighbour), or (n_items, L) 0/1 multi-hot (e.g. genres; neighbours agree when they share at
    least one label; rows without a label are left out). A collapsed table scores what its
    label frequencies give by chance; a table whose neighbourhoods follow the labels scores
    near 1. Exact (every pair of labelled rows, in blocks of 1,024 rows). Undefined
    (UndefinedMetric) with fewer than k + 1 labelled rows or a zero row among them (no
    direction, so no cosine).
    """
    X = as_table(E)
    k = check_positive_int(k, "k")
    Y = np.asarray(labels)
    if Y.ndim == 1:
        if Y.shape != (X.shape[0],):
            raise UserError(f"labels must have shape ({X.shape[0]},) or ({X.shape[0]}, L); "
                            f"got {Y.shape}")
        keep = Y != -1
        onehot = None
    elif Y.ndim == 2 and Y.shape[0] == X.shape[0]:
        if not np.isin(Y, (0, 1)).all():
            raise UserError("multi-hot labels must hold 0 or 1")
        keep = Y.any(axis=1)
        onehot = Y[keep].astype(np.float64)
    else:
        raise UserError(f"labels must have shape ({X.shape[0]},) or ({X.shape[0]}, L); got {Y.shape}")
    X = X[keep]
    m = X.shape[0]
    if m < k + 1:
        raise UndefinedMetric(f"needs at least k + 1 = {k + 1} labelled rows; got {m}")
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise UndefinedMetric("a labelled row is all zeros: it has no direction, so no cosine "
                              "neighbours")
    U = X / norms[:, None]
    y = Y[keep] if onehot is None else None
    total = 0.0
    for start in range(0, m, 1024):
        sims = U[start:start + 1024] @ U.T                     # (b, m)
        rows = np.arange(start, start + sims.shape[0])
        sims[np.arange(sims.shape[0]), rows] = -np.inf          # not its own neighbour
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]        # (b, k), any order
        if onehot is None:
            agree = y[nn] == y[rows][:, None]
        else:
            agree = np.einsum("bl,bkl->bk", onehot[rows], onehot[nn]) > 0
        total += float(agree.mean(axis=1).sum())
    return total / m
