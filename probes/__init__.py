"""Linear probes of item-embedding tables (the ADRec paper's Table 6); depends on collapse_kit.io.

* ``probes.labels``: bundled and user label files (item id + 0/1 columns) and popularity counts,
  validated against the table's items;
* ``probes.linear``: the probe (BatchNorm1d + Linear, BCE, Adam lr 0.01, 20 epochs), its metrics
  (micro/macro precision, recall, F1 and mAP) and baselines (Gaussian table, popularity only,
  all-zero predictor);
* ``probes.report``: JSON-ready dicts and Table 6-style tables;
* ``python -m probes.make_popularity``: regenerates ``probes/data/ml-100k-popularity.csv``.

Command line: ``collapse-kit probe CKPT`` and ``collapse-kit probe-compare CKPT...``.
"""
