"""Embedding-collapse metrics: pure functions of an item-embedding table E (n_items, d).

Each function validates E (2-D, float, finite, at least 2 rows), computes in float64 and returns
plain Python numbers (or a numpy array for spectra). ``docs/metrics.md`` lists them all with
formula, range and reading; ``collapse_kit.analyze.analyze`` runs every one of them.
"""
from collapse_kit.metrics.cluster import (kmeans_labels, knn_label_agreement, silhouette,
                                         silhouette_labels)
from collapse_kit.metrics.entropy import covariance_entropy, shannon_entropy, singular_value_entropy
from collapse_kit.metrics.gaussian import gaussian_table, kl_to_gaussian, kl_to_gaussian_logdet
from collapse_kit.metrics.geometry import mean_cosine_similarity, row_norm_stats, uniformity
from collapse_kit.metrics.isotropy import isotropy, standardized_covariance_eigenvalues
from collapse_kit.metrics.spectrum import (
    Spectra, effective_rank, information_abundance, numerical_rank, participation_ratio,
    power_law_decay, singular_value_variance, singular_values, spectra, stable_rank,
    top_singular_values, zscore)
from collapse_kit.metrics.uncertainty import bootstrap_ci, gaussian_null

__all__ = [
    "bootstrap_ci", "covariance_entropy", "effective_rank", "gaussian_null", "gaussian_table",
    "information_abundance", "isotropy", "kl_to_gaussian", "kl_to_gaussian_logdet", "kmeans_labels",
    "knn_label_agreement", "mean_cosine_similarity", "numerical_rank", "participation_ratio", "power_law_decay", "row_norm_stats",
    "shannon_entropy", "silhouette", "silhouette_labels", "singular_value_entropy",
    "singular_value_variance", "singular_values", "spectra", "Spectra", "stable_rank", "standardized_covariance_eigenvalues", "top_singular_values",
    "uniformity", "zscore",
]
