"""`collapse-kit reproduce` and `collapse-kit quickstart`: train, evaluate, analyze, probe, draw.

reproduce: trains what is missing (reusing finished runs, resuming interrupted ones), then
writes the paper's Table 2 (accuracy), Table 4 (ablations), Table 5 (embedding metrics),
Table 6 (linear probe) and figures (t-SNE grid, spectra, collapse trajectories) into OUT, as
Markdown, CSV and LaTeX, each table stamped with protocol, seeds, preset, version and machine.

quickstart: reproduce with SASRec+ and ADRec on ML-100K, one seed, trained to early stopping
(the ``paper`` preset; ``--preset quick`` stops every stage at 30 epochs for a first look), plus
a ``report.md`` that links every table and figure.
"""
from __future__ import annotations

import sys
from pathlib import Path

from collapse_kit.errors import UserError


def register(sub) -> None:
    from adrec.config import PRESETS
    from collapse_kit.study.runs import MODELS

    p = sub.add_parser("reproduce", help="train what is missing, then write the paper's tables "
                                         "and figures")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML study file: any of the options below as `key: value` lines "
                        "(datasets, models, seeds, ablations, ablation_seeds, preset, "
                        "protocols, bootstrap, out) and a `set:` mapping of training settings; "
                        "flags given and --set override it")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="default ml-100k")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help=f"any of {' '.join(MODELS)} (default all)")
    p.add_argument("--ablations", nargs="*", default=None, metavar="VARIANT",
                   help="also ADRec's Table 4 variants: all of them, or only those named "
                        "(paper names such as 'w/o warm-up', or folder names such as "
                        "no-warm-up)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3)")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="seeds of each ablation variant (default 1, as in the paper)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="training schedule (default paper)")
    p.add_argument("--protocols", nargs="+", choices=("strict", "official"), default=None,
                   help="default both")
    p.add_argument("--out", default=None,
                   help="output folder (runs, tables, figures); required, here or in --config")
    p.add_argument("--jobs", type=int, default=1, help="training runs at a time (subprocesses)")
    p.add_argument("--train-only", action="store_true", help="stop after training")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables and figures from the runs in --out")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples for Table 5 intervals (0 = none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra training setting for every run, e.g. --set device=cpu")
    p.set_defaults(func=cmd_reproduce)

    q = sub.add_parser("quickstart", help="SASRec+ and ADRec on ML-100K trained as the paper "
                                          "trains them, analysis, probe and figures in one "
                                          "report")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="paper (default): every stage to early stopping; quick: at most 30 "
                        "epochs a stage, a first look")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_quickstart)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_reproduce(args) -> int:
    from collapse_kit.study.runs import STUDY_DEFAULTS, plan_study, study_options
    from collapse_kit.study.schedule import run_plan

    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.train_only and args.report_only:
        raise UserError("--train-only and --report-only exclude each other")
    o = study_options({**{key: getattr(args, key) for key in STUDY_DEFAULTS},
                       "sets": args.overrides}, args.config)
    if o["bootstrap"] < 0:
        raise UserError(f"--bootstrap must be >= 0 (0 = no intervals), got {o['bootstrap']}")
    if o["out"] is None:
        raise UserError("give --out FOLDER (or an out: line in --config FILE)")
    out = Path(o["out"])
    plan, extra = plan_study(o["datasets"], o["models"], o["seeds"], out=out, preset=o["preset"],
                             sets=o["sets"], ablations=o["ablations"],
                             ablation_seeds=o["ablation_seeds"], protocols=o["protocols"],
                             finished_only=args.report_only)
    status = {} if args.report_only else run_plan(
        plan, out, o["preset"], jobs=args.jobs, extra_sets=extra, log=_log,
        progress=args.jobs == 1)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if args.train_only:
        print(out)
        return 1 if failed else 0
    _write_reports(plan, out, preset=o["preset"], seeds=o["seeds"], bootstrap=o["bootstrap"])
    if failed:
        _log(f"{len(failed)} run(s) failed; see train.out in their folders")
        return 1
    return 0


def cmd_quickstart(args) -> int:
    from collapse_kit.study.runs import plan_runs
    from collapse_kit.study.schedule import run_plan

    out = Path(args.out)
    plan = plan_runs(["ml-100k"], ["sasrec", "adrec"], 1, protocols=["strict"])
    for s in plan:
        s.seed = args.seed
    _log(f"quickstart: SASRec+ and ADRec (3 stages) on ML-100K, preset {args.preset!r}, "
         f"output in {out}")
    status = run_plan(plan, out, args.preset, jobs=1, log=_log, progress=True)
    failed = {k: v for k, v in status.items() if v.startswith(("failed", "refused"))}
    if failed:
        raise UserError(f"training failed: {failed}; see train.out in {out / 'runs'}")
    _write_reports(plan, out, preset=args.preset, seeds=1, bootstrap=100)
    return 0


def _write_reports(plan, out: Path, **options) -> None:
    """The tables, figures and report.md of ``plan`` (each file logged), the report's path
    printed."""
    from collapse_kit.study.report import write_reports

    for f in write_reports(plan, out, log=_log, **options):
        _log(f"wrote {f}")
    print(out / "report.md")
