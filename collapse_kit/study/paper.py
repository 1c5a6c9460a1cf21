"""The paper's numbers and names: display names, model order, metric columns, and its Tables
2, 4 and 5 as printed (for the "paper" columns of the reports).

The tables are transcribed in ``paper_tables/*.csv``, one row per printed row, in the paper's
units (HR@20 and NDCG@20 in %; Table 5 as printed); this module only reads them. Yelp is not
bundled, so its columns are left out.
"""
from __future__ import annotations

import csv
from pathlib import Path

NAMES = {"sasrec": "SASRec+", "adrec": "ADRec", "diffurec": "DiffuRec", "dreamrec": "DreamRec"}
PAPER_ORDER = ("sasrec", "diffurec", "dreamrec", "adrec")
METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
# Table 5's columns: top-5 singular values, singular-value variance, singular-value entropy,
# covariance entropy, isotropy score, KL divergence to a Gaussian (the authors' formulas,
# docs/metrics.md)
PAPER_TABLE5_KEYS = ("top5_singular_values", "singular_value_variance", "singular_value_entropy",
                     "covariance_entropy", "isotropy", "kl_to_gaussian")


def _read(name: str) -> dict[str, dict[str, tuple]]:
    """``paper_tables/NAME.csv`` as {dataset: {row name: numbers}}: the numbers in column order,
    with Table 5's five singular values (sv1..sv5) gathered into the first tuple."""
    table: dict[str, dict[str, tuple]] = {}
    with open(Path(__file__).with_name("paper_tables") / f"{name}.csv", newline="") as f:
        for row in csv.reader(f):
            if row[0] == "dataset":
                continue
            numbers = tuple(float(x) for x in row[2:])
            if name == "table5":
                numbers = (numbers[:5], *numbers[5:])
            table.setdefault(row[0], {})[row[1]] = numbers
    return table


PAPER_TABLE2 = _read("table2")  # {dataset: {model: (HR@20, NDCG@20)}}
PAPER_TABLE4 = _read("table4")  # {dataset: {variant as printed: (HR@20, NDCG@20)}}
PAPER_TABLE4_ML100K = PAPER_TABLE4["ml-100k"]
PAPER_TABLE5 = _read("table5")  # {dataset: {model: (top5 tuple, *the other PAPER_TABLE5_KEYS)}}

# Table 5 row names -> the paper's models (ADRec's final table is its stage 3)
TABLE5_PAPER_MODEL = {"SASRec+": "sasrec", "DiffuRec": "diffurec", "DreamRec": "dreamrec",
                      "ADRec stage 3": "adrec", "ADRec": "adrec"}
