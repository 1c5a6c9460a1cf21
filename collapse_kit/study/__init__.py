"""A study: the runs of a reproduction, how they are trained, and the paper's tables and figures
made from them.

This package and the command line (``collapse_kit/cli.py``, ``collapse_kit/commands/``) are the
composition root: the only code that imports both ``adrec`` (the trainer and its checkpoints)
and ``probes``, and the only library code that knows run folders, presets and the paper.

- ``paper``: the paper's numbers and display names (data only);
- ``runs``: ``RunSpec`` and ``plan_runs`` (which runs, where), the reuse check, and ``Run``, which
  reads one run folder once (metrics, item tables, trajectory);
- ``schedule``: ``run_plan``, the parallel, resumable runner (``collapse-kit train`` subprocesses);
- ``report``: ``write_reports`` and the tables and figures it writes.
"""
