"""`collapse-kit reproduce` and `collapse-kit quickstart`: train, evaluate, analyze, probe, draw.

reproduce: trains what is missing (reusing finished runs, resuming interrupted ones), then
writes the paper's Table 2 (accuracy), Table 4 (ablations), Table 5 (embedding metrics),
Table 6 (linear probe) and figures (t-SNE grid, spectra, collapse trajectories) into OUT, as
Markdown, CSV and LaTeX, each table stamped with protocol, seeds, preset, version and machine.

quickstart: reproduce with SASRec+ and ADRec on ML-100K, one seed, the ``quick`` preset, plus a
``report.md`` that links every table and figure.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from collapse_kit.errors import UserError

NAMES = {"sasrec": "SASRec+", "adrec": "ADRec", "diffurec": "DiffuRec", "dreamrec": "DreamRec"}
PAPER_ORDER = ("sasrec", "diffurec", "dreamrec", "adrec")
METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")


def register(sub) -> None:
    from collapse_kit.experiments import MODELS, PRESETS

    p = sub.add_parser("reproduce", help="train what is missing, then write the paper's tables "
                                         "and figures")
    p.add_argument("--datasets", nargs="+", default=["ml-100k"], metavar="NAME")
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="MODEL",
                   help=f"any of {' '.join(MODELS)}")
    p.add_argument("--ablations", nargs="*", default=None, metavar="VARIANT",
                   help="also ADRec's Table 4 variants: all of them, or only those named "
                        "(paper names such as 'w/o warm-up', or folder names such as "
                        "no-warm-up)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--ablation-seeds", type=int, default=1,
                   help="seeds of each ablation variant (default 1, as in the paper)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--protocols", nargs="+", choices=("strict", "official"),
                   default=["strict", "official"])
    p.add_argument("--out", required=True, help="output folder (runs, tables, figures)")
    p.add_argument("--jobs", type=int, default=1, help="training runs at a time (subprocesses)")
    p.add_argument("--train-only", action="store_true", help="stop after training")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the tables and figures from the runs in --out")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="bootstrap resamples for Table 5 intervals (0 = none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra training setting for every run, e.g. --set device=cpu")
    p.set_defaults(func=cmd_reproduce)

    q = sub.add_parser("quickstart", help="SASRec+ and ADRec on ML-100K (quick preset), "
                                          "analysis, probe and figures in one report")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_quickstart)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_reproduce(args) -> int:
    from collapse_kit.experiments import check_reuse, plan_runs, run_plan

    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    if args.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0 (0 = no intervals), got {args.bootstrap}")
    if args.train_only and args.report_only:
        raise UserError("--train-only and --report-only exclude each other")
    extra = {}
    for pair in args.overrides:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        extra[k.strip()] = v.strip()
    for d in args.datasets:
        _check_dataset(d)
    out = Path(args.out)
    plan = plan_runs(args.datasets, args.models, args.seeds, ablations=args.ablations,
                     ablation_seeds=args.ablation_seeds, protocols=args.protocols)
    for spec in plan:  # every --set checked against every model before anything starts
        try:
            spec.settings(args.preset, extra)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{spec.model}: {exc}") from None
    if args.report_only:
        plan = [s for s in plan if s.checkpoint(out).exists()]
        if not plan:
            raise UserError(f"no finished runs in {out}; drop --report-only to train them")
    refused = check_reuse(plan, out, args.preset, extra)
    if refused:
        folder, diffs = next(iter(refused.items()))
        raise UserError(
            f"{len(refused)} finished run(s) in {out} were trained with other settings than "
            f"--preset {args.preset} and these --set values, e.g. {folder} ({'; '.join(diffs)})"
            "; give the settings they were trained with, or another --out")
    if args.report_only:
        status = {}
    else:
        status = run_plan(plan, out, args.preset, jobs=args.jobs, extra_sets=extra, log=_log,
                          progress=args.jobs == 1)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if args.train_only:
        print(out)
        return 1 if failed else 0
    written = write_reports(plan, out, preset=args.preset, seeds=args.seeds,
                            bootstrap=args.bootstrap)
    for f in written:
        _log(f"wrote {f}")
    print(out / "report.md")
    if failed:
        _log(f"{len(failed)} run(s) failed; see train.out in their folders")
        return 1
    return 0


def cmd_quickstart(args) -> int:
    from collapse_kit.experiments import plan_runs, run_plan

    out = Path(args.out)
    plan = [s for s in plan_runs(["ml-100k"], ["sasrec", "adrec"], 1, protocols=["strict"])]
    if args.seed:
        for s in plan:
            s.seed = args.seed
    _log(f"quickstart: SASRec+ and ADRec (3 stages) on ML-100K, preset {args.preset!r}, "
         f"output in {out}")
    status = run_plan(plan, out, args.preset, jobs=1, log=_log, progress=True)
    if any(v.startswith(("failed", "refused")) for v in status.values()):
        failed = {k: v for k, v in status.items() if v.startswith(("failed", "refused"))}
        raise UserError(f"training failed: {failed}; see train.out in {out / 'runs'}")
    written = write_reports(plan, out, preset=args.preset, seeds=1, bootstrap=100)
    for f in written:
        _log(f"wrote {f}")
    print(out / "report.md")
    return 0


def _check_dataset(name: str) -> None:
    from adrec.data import BUNDLED

    if name not in BUNDLED and not Path(name).exists():
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(BUNDLED)} or give a "
                        "path")


# ---------------------------------------------------------------------------------------------

def write_reports(plan, out: Path, *, preset: str, seeds: int, bootstrap: int) -> list[Path]:
    """Tables 2, 4, 5, 6 and the figures for every dataset of ``plan``; returns written files."""
    from collapse_kit import __version__
    from collapse_kit.report import machine_description, utc_now

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    base_stamp = {"preset": preset, "seeds": ", ".join(str(s) for s in range(seeds)),
                  "collapse-kit": __version__, "machine (report)": machine_description(),
                  "date": utc_now()}
    written, sections = [], []
    for dataset in dict.fromkeys(s.dataset_key for s in plan):
        runs = [s for s in plan if s.dataset_key == dataset]
        _log(f"{dataset}: accuracy tables")
        tables = accuracy_tables(runs, out, base_stamp)
        tables += ablation_tables(runs, out, base_stamp)
        _log(f"{dataset}: embedding metrics (Table 5, bootstrap {bootstrap})")
        tables += embedding_tables(runs, out, base_stamp, bootstrap=bootstrap)
        _log(f"{dataset}: linear probe (Table 6)")
        tables += probe_tables(runs, out, base_stamp)
        _log(f"{dataset}: figures (collapse trajectories, t-SNE, spectra)")
        for key, table in tables:
            for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("latex", "tex")):
                path = out / "tables" / f"{key}-{dataset}.{ext}"
                _atomic_write(path, table.render(fmt))
                written.append(path)
            sections.append(table.render("markdown"))
        for title, path in draw_figures(runs, out, dataset):
            written.append(path)
            sections.append(f"### {title}\n\n![{title}]({path.relative_to(out)})\n")
    report = ["# collapse-kit report", "",
              f"Made by `collapse-kit` {base_stamp['collapse-kit']} on {base_stamp['date']}.",
              "Every number below comes from the runs in `runs/` (their folders hold the "
              "checkpoints, JSON-lines logs and the exact `collapse-kit train` command output).",
              ""] + sections
    _atomic_write(out / "report.md", "\n".join(report))
    written.append(out / "report.md")
    return written


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _commands_note(runs, out: Path, preset: str) -> str:
    spec = runs[0]
    cmd = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(spec.command(out, preset)))
    return f"Each run: `{cmd.replace('python3', 'python').replace(sys.executable, 'python')}` " \
           "(model, seed and protocol varied)."


def accuracy_tables(runs, out: Path, stamp: dict):
    from collapse_kit.experiments import PAPER_TABLE2, run_metrics
    from collapse_kit.report import Table, fmt_mean_sd

    tables = []
    dataset = runs[0].dataset_key
    for protocol in dict.fromkeys(s.protocol for s in runs if not s.variant):
        rows, trained_on = [], set()
        entries = [(m, None) for m in PAPER_ORDER if any(s.model == m for s in runs)]
        if ("adrec", None) in entries:  # ADRec's stage 1 is the `stage1` model on its own
            entries.insert(entries.index(("adrec", None)), ("adrec", "stage1"))
        for model, stage in entries:
            ms = [run_metrics(s, out, stage) for s in runs
                  if s.model == model and not s.variant and s.protocol == protocol]
            ms = [m for m in ms if m]
            if not ms:
                continue
            cells = [fmt_mean_sd([m[protocol]["test"][k] for m in ms]) for k in METRICS]
            paper = PAPER_TABLE2.get(dataset, {}).get(model)
            trained_on.update(m["trained_on"] for m in ms)
            if stage == "stage1":
                paper = None
            rows.append([NAMES[model] if stage is None else "stage1 (ADRec stage 1)", *cells,
                         f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "–",
                         fmt_mean_sd([m["wall_seconds"] for m in ms], 0), str(len(ms))])
        if rows:
            tables.append((f"table2-{protocol}", Table(
                title=f"Table 2 ({dataset}, {protocol} protocol): test metrics in %, "
                      "mean ± sd over seeds",
                columns=["Model", *METRICS, "paper HR@20 / NDCG@20", "train+eval s", "seeds"],
                rows=rows, stamp={"protocol": protocol,
                                  "trained on": ", ".join(sorted(trained_on)), **stamp},
                notes=["Selection and metrics follow the protocol (README: Evaluation). "
                       "Time: the sum of training and validation seconds of all stages."])))
    return tables


def ablation_tables(runs, out: Path, stamp: dict):
    from collapse_kit.experiments import ABLATIONS, PAPER_TABLE4, run_metrics
    from collapse_kit.report import Table, fmt_mean_sd

    variants = [v for v in ABLATIONS if any(s.variant == v for s in runs)]
    if not variants:
        return []
    dataset = runs[0].dataset_key
    rows, trained_on = [], set()
    for name in ["ADRec", *variants]:
        variant = "" if name == "ADRec" else name
        ms = [run_metrics(s, out) for s in runs if s.model == "adrec" and s.variant == variant
              and s.protocol == "strict"]
        ms = [m for m in ms if m]
        if not ms:
            continue
        trained_on.update(m["trained_on"] for m in ms)
        paper = PAPER_TABLE4.get(dataset, {}).get(name)
        rows.append([name, fmt_mean_sd([m["strict"]["test"]["HR@20"] for m in ms]),
                     fmt_mean_sd([m["strict"]["test"]["NDCG@20"] for m in ms]),
                     f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "–", str(len(ms))])
    return [("table4", Table(
        title=f"Table 4 ({dataset}): ADRec ablations, test HR@20 / NDCG@20 in %, strict protocol",
        columns=["Variant", "HR@20", "NDCG@20", "paper HR@20 / NDCG@20", "seeds"], rows=rows,
        stamp={"protocol": "strict", "trained on": ", ".join(sorted(trained_on)), **stamp},
        notes=["Variants start from the stage-1 checkpoint of the main ADRec run of the same "
               "seed, except the end-to-end ones as the paper describes them: w/o pre-train "
               "(no stages 1 and 2, E from N(0, 1)) and w/o mse (end-to-end and CE only)."]))]


def _has_table(path: Path) -> bool:
    from adrec.checkpoint import safe_load

    if not path.exists():
        return False
    return not safe_load(path).get("table_stripped")


def embedding_checkpoints(runs, out: Path) -> list[tuple[str, Path]]:
    """(name, checkpoint) of the lowest seed's final tables, ADRec's stages included, from the
    strict runs; a model whose strict table was stripped for transport (light checkpoints) or
    that has no strict run falls back to the same seed's official-protocol run."""
    found = []
    seed0 = min(r.seed for r in runs)
    for model in PAPER_ORDER:
        for protocol in ("strict", "official"):
            spec = next((s for s in runs if s.model == model and not s.variant
                         and s.protocol == protocol and s.seed == seed0), None)
            if spec is None:
                continue
            got = []
            if model == "adrec":
                for stage, label in (("stage1", "ADRec stage 1 (pre-train)"),
                                     ("stage2", "ADRec stage 2 (warm-up)"),
                                     ("stage3", "ADRec stage 3")):
                    p = spec.folder(out) / f"{stage}.pt"
                    if _has_table(p):
                        got.append((label, p))
                if not got and _has_table(spec.checkpoint(out)):
                    got.append(("ADRec", spec.checkpoint(out)))  # only the final table was kept
            elif _has_table(spec.checkpoint(out)):
                got.append((NAMES[model], spec.checkpoint(out)))
            if got:
                found.extend(got)
                break
    return found


def _run_protocol(path: Path) -> str:
    """'strict' or 'official', from a run folder's name (``s0-official``)."""
    return path.parent.name.split("-", 1)[-1]


def embedding_tables(runs, out: Path, stamp: dict, *, bootstrap: int):
    from collapse_kit.analyze import (COMPARE_COLUMNS, CORRECTED_COLUMNS, analyze,
                                      compare_metrics, format_comparison)
    from collapse_kit.io import load_embeddings
    from collapse_kit.metrics import gaussian_table
    from collapse_kit.report import Table

    ckpts = embedding_checkpoints(runs, out)
    if not ckpts:
        return []
    dataset = runs[0].dataset_key
    tables_, rows, ci_rows = {}, [], []
    for name, path in ckpts:
        tables_[name] = load_embeddings(path).table
    n, d = next(iter(tables_.values())).shape
    for name, E in tables_.items():
        rows.append((name, compare_metrics(E, corrected=True)))
    rows.append(("Gaussian (same shape, seed 0)",
                 compare_metrics(gaussian_table(n, d, random_state=0), corrected=True)))
    md = format_comparison(rows, "csv", corrected=True).splitlines()
    import csv as _csv

    parsed = list(_csv.reader(md))
    protocols = sorted({_run_protocol(p) for _, p in ckpts})
    table5 = Table(title=f"Table 5 ({dataset}): embedding metrics of the item tables (seed "
                         f"{min(r.seed for r in runs)}, {' and '.join(protocols)} runs)",
                   columns=["Model"] + [t for _, t in COMPARE_COLUMNS + CORRECTED_COLUMNS],
                   rows=[r for r in parsed[1:]],
                   stamp=stamp,
                   notes=["Paper variants (top-5 SV ... silhouette) are the authors' formulas "
                          "(docs/metrics.md); KL (log-det) and effective rank are corrected / "
                          "added metrics. The Gaussian row is the same-shape reference."]
                         + [f"{name}: from the official-protocol run (the strict run's table "
                            "is not in this folder)." for name, p in ckpts
                            if _run_protocol(p) == "official" and "strict" in protocols])
    keys = ("singular_value_entropy", "covariance_entropy", "isotropy", "kl_to_gaussian_logdet",
            "effective_rank")
    if bootstrap >= 2:
        for name, E in tables_.items():
            r = analyze(E, bootstrap=bootstrap, null_draws=1, seed=0)
            ci_rows.append([name] + [_interval_cell(r, k) for k in keys])
    out_tables = [("table5", table5)]
    paper_rows = table5_vs_paper(rows, dataset)
    if paper_rows:
        out_tables.append(("table5-paper", Table(
            title=f"Table 5 against the paper ({dataset}): ours / paper's value, and whether "
                  "the models are ordered as in the paper",
            columns=["Model", "SV 1", "SV Variance", "SV Entropy", "Cov. Entropy", "Isotropy",
                     "KL to Gaussian"],
            rows=paper_rows, stamp=stamp,
            notes=["SV 1 is the largest singular value (the first of Table 5's top 5). The "
                   "last row compares, per metric, every pair of models the two tables share: "
                   "a pair agrees when both tables order it the same way; a pair the paper "
                   "prints as equal (its 2 decimals) orders nothing and is not counted. "
                   "Magnitudes depend on the table's size and training; the Gaussian row "
                   "(ours) is the same-shape reference the paper's DreamRec resembles."])))
    if ci_rows:
        out_tables.append(("table5-intervals", Table(
            title=f"Table 5 intervals ({dataset}): value [95% bootstrap interval over items, "
                  f"{bootstrap} resamples] (G = same-shape Gaussian null)",
            columns=["Model", *keys], rows=ci_rows, stamp=stamp)))
    return out_tables


# Table 5 row names -> the paper's models (ADRec's final table is its stage 3)
TABLE5_PAPER_MODEL = {"SASRec+": "sasrec", "DiffuRec": "diffurec", "DreamRec": "dreamrec",
                      "ADRec stage 3": "adrec", "ADRec": "adrec"}


def _table5_value(value, key: str):
    """The compared number of one Table 5 cell: the largest singular value for the top 5."""
    if value is None:
        return None
    return float(value[0]) if key == "top5_singular_values" else float(value)


def order_agreement(ours: dict[str, float], paper: dict[str, float]) -> tuple[int, int, list[str]]:
    """(agreeing pairs, compared pairs, disagreements) of two {model: value} orderings.

    Every pair of models present in both with a defined value is compared, except pairs the
    paper ties (equal printed values order nothing) or ours ties exactly. A disagreement reads
    ``"A > B here, < in the paper"``.
    """
    names = [m for m in ours if m in paper and ours[m] is not None and paper[m] is not None]
    agree, compared, wrong = 0, 0, []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if paper[a] == paper[b] or ours[a] == ours[b]:
                continue
            compared += 1
            if (ours[a] > ours[b]) == (paper[a] > paper[b]):
                agree += 1
            else:
                hi, lo = (a, b) if ours[a] > ours[b] else (b, a)
                wrong.append(f"{hi} > {lo} here, < in the paper")
    return agree, compared, wrong


def table5_vs_paper(rows, dataset: str) -> list[list[str]]:
    """Rows ``ours / paper`` per Table 5 metric for the models of ``rows`` that the paper's
    Table 5 has on ``dataset``, the Gaussian reference row, and an order-agreement row.

    ``rows``: (Table 5 row name, metrics dict of ``compare_metrics``). Empty when the paper has
    no Table 5 for the dataset or shares no model with ``rows``.
    """
    from collapse_kit.analyze import UNDEFINED_SUFFIX, _fmt
    from collapse_kit.experiments import PAPER_TABLE5, PAPER_TABLE5_KEYS

    paper = PAPER_TABLE5.get(dataset, {})
    shared = [(name, m, TABLE5_PAPER_MODEL[name]) for name, m in rows
              if TABLE5_PAPER_MODEL.get(name) in paper]
    if not shared:
        return []

    def ours(m: dict, key: str):  # compared as printed, so float noise orders nothing
        if key + UNDEFINED_SUFFIX in m or m.get(key) is None:
            return None
        return float(_fmt(_table5_value(m[key], key), key))

    out = []
    for name, m, model in shared:
        cells = []
        for j, key in enumerate(PAPER_TABLE5_KEYS):
            v = ours(m, key)
            cells.append(f"{'n/a' if v is None else _fmt(v, key)} / "
                         f"{_fmt(_table5_value(paper[model][j], key), 'top5_singular_values')}")
        out.append([f"{name} / {NAMES[model]}" if name != NAMES[model] else name, *cells])
    for name, m in rows:
        if name.startswith("Gaussian"):
            out.append([name, *(f"{'n/a' if ours(m, k) is None else _fmt(ours(m, k), k)} / –"
                                for k in PAPER_TABLE5_KEYS)])
    verdicts = []
    for j, key in enumerate(PAPER_TABLE5_KEYS):
        agree, compared, wrong = order_agreement(
            {NAMES[model]: ours(m, key) for _, m, model in shared},
            {NAMES[model]: _table5_value(paper[model][j], key) for _, _, model in shared})
        if not compared:
            verdicts.append("– (no pair to compare)")
        else:
            verdicts.append(("yes" if agree == compared else "no") + f" ({agree}/{compared} pairs)"
                            + (": " + "; ".join(wrong) if wrong else ""))
    out.append(["same order as the paper", *verdicts])
    return out


def _interval_cell(r: dict, key: str) -> str:
    """``value [low, high] (G gaussian)``; ``n/a (reason)`` for an undefined metric."""
    if r.get(key) is None:
        return f"n/a ({r.get(key + '_undefined', 'undefined')})"

    def num(k):
        return "n/a" if r.get(k) is None else f"{r[k]:.3f}"

    return (f"{r[key]:.3f} [{num(key + '_ci_low')}, {num(key + '_ci_high')}] "
            f"(G {num(key + '_gaussian')})")


def probe_tables(runs, out: Path, stamp: dict):
    """Table 6: the ML-100K genre probe of every table, with the readable baselines."""
    if runs[0].dataset_key != "ml-100k":
        return []
    from collapse_kit.io import load_embeddings
    from collapse_kit.report import Table
    from probes.labels import load_item_labels, load_popularity
    from probes.linear import ProbeSettings, probe_columns
    from probes.report import format_results

    ckpts = embedding_checkpoints(runs, out)
    if not ckpts:
        return []
    tables = {name: load_embeddings(path).table for name, path in ckpts}
    n = next(iter(tables.values())).shape[0]
    columns = probe_columns(tables, load_item_labels("ml-100k-genres", n).Y,
                            settings=ProbeSettings(seeds=5),
                            popularity=load_popularity("ml-100k", n))
    md = format_results(columns, "markdown").splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:]]
    return [("table6", Table(
        title="Table 6 (ml-100k): linear genre probe of the item tables, held-out items, "
              "% mean ± sd over 5 random 80/20 item splits",
        columns=header, rows=rows, stamp=stamp,
        notes=["BatchNorm1d + Linear on the frozen table, BCE, Adam lr 0.01, 20 epochs "
               "(probes/). Micro averages are the paper's precision/recall/F1; macro averages "
               "run over the 17 genres that occur."]))]


def draw_figures(runs, out: Path, dataset: str) -> list[tuple[str, Path]]:
    """Collapse trajectories, the t-SNE grid (Figure 1 style) and the spectra of the tables."""
    from collapse_kit.monitor import plot_trajectories, read_trajectory

    made = []
    seed0 = min(r.seed for r in runs)
    trajs = {}
    for model in PAPER_ORDER:
        spec = next((s for s in runs if s.model == model and not s.variant
                     and s.protocol == "strict" and s.seed == seed0), None)
        if spec is not None and spec.folder(out).exists():
            try:
                trajs[NAMES[model]] = read_trajectory(spec.folder(out))
            except FileNotFoundError:
                continue
    if any(trajs.values()):
        fig = plot_trajectories(trajs)
        path = out / "figures" / f"collapse-trajectories-{dataset}.png"
        _save(fig, path)
        made.append((f"Collapse statistics during training ({dataset}, seed {seed0}; dotted "
                     "lines: stage boundaries; a stage starts from the previous stage's "
                     "selected epoch, so a curve can step back there)", path))
    ckpts = embedding_checkpoints(runs, out)
    if not ckpts:
        return made
    from collapse_kit.figures import save_figure, spectrum_figure, table_spectrum, tsne_figure
    from collapse_kit.io import load_embeddings
    from collapse_kit.metrics import gaussian_table
    from collapse_kit.tsne import TSNESettings, tsne_map

    tables = {name: load_embeddings(path).table for name, path in ckpts}
    n, d = next(iter(tables.values())).shape
    tables["Gaussian"] = gaussian_table(n, d, random_state=0)
    settings = TSNESettings()
    note = ""
    if n <= 3 * settings.perplexity:  # a toy table: the default perplexity needs > 90 items
        settings = TSNESettings(perplexity=max(2.0, (n - 1) // 3 - 1.0))
        note = f"; perplexity {settings.perplexity:g} for a {n}-item table"
    maps = [tsne_map(E, settings) for E in tables.values()]
    fig = tsne_figure(maps, list(tables), reference="Gaussian", shared_scale=True,
                      title=f"t-SNE of the item tables ({dataset}, seed {seed0})")
    paths = save_figure(fig, out / "figures" / f"tsne-{dataset}")
    made.append((f"t-SNE of the item tables ({dataset}; one shared scale, x k = radius "
                 f"relative to the Gaussian panel{note})", paths[0]))
    fig = spectrum_figure({k: table_spectrum(E) for k, E in tables.items()},
                          reference="Gaussian", title=f"Singular-value spectra ({dataset})")
    paths = save_figure(fig, out / "figures" / f"spectrum-{dataset}")
    made.append((f"Normalised singular-value spectra of the centred tables ({dataset})",
                 paths[0]))
    return made


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    os.replace(tmp, path)
