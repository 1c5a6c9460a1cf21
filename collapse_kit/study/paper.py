"""The paper's numbers and names: display names, model order, metric columns, and its Tables
2, 4 and 5 as printed (for the "paper" columns of the reports). Data only; no imports.
"""
from __future__ import annotations

NAMES = {"sasrec": "SASRec+", "adrec": "ADRec", "diffurec": "DiffuRec", "dreamrec": "DreamRec"}
PAPER_ORDER = ("sasrec", "diffurec", "dreamrec", "adrec")
METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")

# The paper's Table 2 (HR@20, NDCG@20 in %) for the four models reproduced here.
PAPER_TABLE2 = {
    "ml-100k": {"sasrec": (18.4538, 7.1034), "dreamrec": (3.4395, 1.3339),
                "diffurec": (16.0688, 6.555), "adrec": (22.0699, 9.0028)},
    "baby": {"sasrec": (5.5268, 2.5197), "dreamrec": (0.7648, 0.2777),
             "diffurec": (5.382, 2.5649), "adrec": (7.1524, 3.1455)},
    "beauty": {"sasrec": (15.2038, 7.6509), "dreamrec": (0.6815, 0.2728),
               "diffurec": (13.9102, 7.3326), "adrec": (16.8246, 8.3214)},
    "sports": {"sasrec": (6.4059, 3.344), "dreamrec": (0.7432, 0.2148),
               "diffurec": (6.2174, 3.2067), "adrec": (8.1639, 3.6389)},
    "toys": {"sasrec": (10.7082, 6.0517), "dreamrec": (0.4755, 0.1731),
             "diffurec": (9.859, 5.8508), "adrec": (12.0924, 6.7982)},
}
# The paper's Table 4 (HR@20, NDCG@20 in %) on the five bundled datasets (Yelp is not bundled).
PAPER_TABLE4 = {
    "baby": {"ADRec": (7.1524, 3.1455), "w/o warm-up": (6.7507, 2.9535),
             "w/o pre-train": (4.5217, 2.1488), "w/o mse": (4.0439, 1.9483),
             "w/o CAM": (7.0320, 3.0853), "MLP": (6.8216, 2.8186)},
    "beauty": {"ADRec": (16.8246, 8.3214), "w/o warm-up": (15.7483, 8.1056),
               "w/o pre-train": (13.233, 6.9819), "w/o mse": (12.6733, 6.7209),
               "w/o CAM": (16.0798, 7.9479), "MLP": (16.0738, 8.0568)},
    "ml-100k": {"ADRec": (22.0699, 9.0028), "w/o warm-up": (21.0144, 8.3206),
                "w/o pre-train": (14.835, 5.5249), "w/o mse": (13.2913, 5.3358),
                "w/o CAM": (18.9609, 7.5569), "MLP": (20.0558, 7.8465)},
    "sports": {"ADRec": (8.1639, 3.6389), "w/o warm-up": (7.2156, 3.7413),
               "w/o pre-train": (5.9635, 3.0097), "w/o mse": (5.6443, 2.9709),
               "w/o CAM": (8.0550, 3.5146), "MLP": (7.6604, 3.1831)},
    "toys": {"ADRec": (12.0924, 6.7982), "w/o warm-up": (11.9226, 6.6113),
             "w/o pre-train": (9.3835, 5.4178), "w/o mse": (8.2456, 4.8172),
             "w/o CAM": (12.0264, 6.5298), "MLP": (11.4461, 6.1759)},
}
PAPER_TABLE4_ML100K = PAPER_TABLE4["ml-100k"]
# The paper's Table 5 (embedding metrics of the final item tables), as printed: top-5 singular
# values, singular-value variance, singular-value entropy, covariance entropy, isotropy score,
# KL divergence to a Gaussian (the authors' formulas, docs/metrics.md). Yelp is not bundled.
PAPER_TABLE5_KEYS = ("top5_singular_values", "singular_value_variance", "singular_value_entropy",
                     "covariance_entropy", "isotropy", "kl_to_gaussian")
PAPER_TABLE5 = {
    "baby": {
        "dreamrec": ((80.58, 80.09, 79.91, 79.02, 78.75), 35.29, 4.85, 4.83, 0.51, 0.96),
        "diffurec": ((106.31, 90.62, 85.69, 81.53, 81.36), 66.94, 4.85, 4.82, 0.13, 1.83),
        "sasrec": ((84.74, 79.9, 79.44, 78.92, 78.59), 38.89, 4.85, 4.84, 0.24, 1.09),
        "adrec": ((247.88, 164.0, 145.34, 138.33, 130.06), 1017.59, 4.74, 4.33, 0.02, 10.38),
    },
    "beauty": {
        "dreamrec": ((89.7, 88.48, 88.32, 87.74, 87.62), 33.16, 4.85, 4.84, 0.56, 0.7),
        "diffurec": ((129.98, 116.93, 113.33, 97.61, 97.35), 108.99, 4.84, 4.81, 0.1, 2.25),
        "sasrec": ((128.7, 125.14, 106.41, 97.86, 94.2), 101.55, 4.84, 4.81, 0.09, 2.11),
        "adrec": ((177.19, 159.37, 145.52, 137.74, 126.75), 995.55, 4.76, 4.51, 0.02, 10.37),
    },
    "ml-100k": {
        "dreamrec": ((43.16, 42.64, 42.42, 41.83, 41.47), 33.56, 4.84, 4.78, 0.23, 4.41),
        "diffurec": ((55.42, 49.44, 44.24, 42.55, 41.41), 38.75, 4.83, 4.77, 0.04, 5.15),
        "sasrec": ((47.37, 42.03, 41.78, 41.6, 41.5), 39.33, 4.83, 4.78, 0.11, 4.6),
        "adrec": ((90.91, 82.5, 71.2, 63.54, 53.68), 122.57, 4.8, 4.55, 0.04, 10.43),
    },
    "sports": {
        "dreamrec": ((122.18, 121.81, 121.4, 121.04, 120.88), 33.16, 4.85, 4.85, 0.66, 0.35),
        "diffurec": ((220.33, 182.85, 172.72, 151.13, 137.7), 347.81, 4.84, 4.79, 0.09, 3.43),
        "sasrec": ((133.91, 125.74, 122.4, 122.0, 120.98), 68.15, 4.85, 4.84, 0.13, 0.81),
        "adrec": ((415.16, 355.94, 317.4, 275.3, 257.72), 433.0, 4.65, 3.97, 0.01, 10.37),
    },
    "toys": {
        "dreamrec": ((109.57, 107.46, 106.19, 104.88, 103.48), 91.02, 4.85, 4.82, 0.4, 1.59),
        "diffurec": ((139.38, 135.46, 117.65, 106.74, 105.77), 138.12, 4.84, 4.81, 0.1, 2.39),
        "sasrec": ((103.28, 97.7, 96.78, 96.15, 95.16), 52.63, 4.85, 4.84, 0.13, 1.03),
        "adrec": ((182.03, 156.4, 148.03, 139.77, 137.68), 1243.76, 4.75, 4.51, 0.01, 10.37),
    },
}

# Table 5 row names -> the paper's models (ADRec's final table is its stage 3)
TABLE5_PAPER_MODEL = {"SASRec+": "sasrec", "DiffuRec": "diffurec", "DreamRec": "dreamrec",
                      "ADRec stage 3": "adrec", "ADRec": "adrec"}
