"""The paper's tables and figures from a study's run folders: Tables 2, 4, 5 and 6, the t-SNE
grid, the spectra and the collapse trajectories, written as Markdown, CSV and LaTeX beside a
``report.md`` that links them.

Data flows one way: run folders -> :class:`~collapse_kit.study.runs.Run` (each checkpoint read
once per report) -> arrays -> metric functions -> :class:`~collapse_kit.tables.Table` / figures
-> files. Nothing here trains; ``study.schedule`` does.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from collapse_kit.study.paper import (METRICS, NAMES, PAPER_ORDER, PAPER_TABLE2, PAPER_TABLE4,
                                      PAPER_TABLE5, PAPER_TABLE5_KEYS, TABLE5_PAPER_MODEL)
from collapse_kit.study.runs import Run, RunSpec
from collapse_kit.tables import Table, atomic_write, fmt_mean_sd

ADREC_STAGES = (("stage1", "ADRec stage 1 (pre-train)"), ("stage2", "ADRec stage 2 (warm-up)"),
                ("stage3", "ADRec stage 3"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_reports(plan: list[RunSpec], out: Path, *, preset: str, seeds: int, bootstrap: int,
                  log=_stderr) -> list[Path]:
    """Tables 2, 4, 5, 6 and the figures for every dataset of ``plan``; returns written files."""
    from collapse_kit import __version__
    from collapse_kit.tables import machine_description, utc_now

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    base_stamp = {"preset": preset, "seeds": ", ".join(str(s) for s in range(seeds)),
                  "collapse-kit": __version__, "machine (report)": machine_description(),
                  "date": utc_now()}
    written, sections = [], []
    for dataset in dict.fromkeys(s.dataset_key for s in plan):
        runs = [Run(s, out) for s in plan if s.dataset_key == dataset]
        log(f"{dataset}: accuracy tables")
        tables = accuracy_tables(runs, base_stamp)
        tables += ablation_tables(runs, base_stamp)
        log(f"{dataset}: embedding metrics (Table 5, bootstrap {bootstrap})")
        tables += embedding_tables(runs, base_stamp, bootstrap=bootstrap)
        log(f"{dataset}: collapse and popularity")
        tables += popularity_tables(runs, base_stamp)
        log(f"{dataset}: linear probe (Table 6)")
        tables += probe_tables(runs, base_stamp)
        log(f"{dataset}: figures (collapse trajectories, t-SNE, spectra)")
        for key, table in tables:
            for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("latex", "tex")):
                path = out / "tables" / f"{key}-{dataset}.{ext}"
                atomic_write(path, table.render(fmt) + "\n")
                written.append(path)
            sections.append(table.render("markdown") + "\n")
        for title, path in draw_figures(runs, out, dataset):
            written.append(path)
            sections.append(f"### {title}\n\n![{title}]({path.relative_to(out)})\n")
    report = ["# collapse-kit report", "",
              f"Made by `collapse-kit` {base_stamp['collapse-kit']} on {base_stamp['date']}.",
              "Every number below comes from the runs in `runs/` (their folders hold the "
              "checkpoints, JSON-lines logs and the exact `collapse-kit train` command output).",
              ""] + sections
    atomic_write(out / "report.md", "\n".join(report))
    written.append(out / "report.md")
    return written


def _main_runs(runs: list[Run], model: str, protocol: str, seed: int | None = None) -> list[Run]:
    """The runs of ``model`` itself (not an ablation variant) under ``protocol``, of ``seed``
    only when it is given."""
    return [r for r in runs if r.spec.model == model and not r.spec.variant
            and r.spec.protocol == protocol and (seed is None or r.spec.seed == seed)]


def _finished_metrics(runs, stage: str | None = None) -> list[dict]:
    """``Run.metrics(stage)`` of the runs that have that checkpoint."""
    return [m for m in (r.metrics(stage) for r in runs) if m]


# -- Table 2 and Table 4: accuracy ------------------------------------------------------------

def accuracy_tables(runs: list[Run], stamp: dict) -> list[tuple[str, Table]]:
    """Table 2 per protocol: test metrics, mean ± sd over seeds, beside the paper's row."""
    tables = []
    dataset = runs[0].spec.dataset_key
    found = {r.spec.protocol for r in runs if not r.spec.variant}
    for protocol in [p for p in ("strict", "official") if p in found]:
        rows, used = [], []
        entries = [(m, None) for m in PAPER_ORDER if any(r.spec.model == m for r in runs)]
        if ("adrec", None) in entries:  # ADRec's stage 1 is the `stage1` model on its own
            entries.insert(entries.index(("adrec", None)), ("adrec", "stage1"))
        for model, stage in entries:
            ms = _finished_metrics(_main_runs(runs, model, protocol), stage)
            if not ms:
                continue
            cells = [fmt_mean_sd([m[protocol]["test"][k] for m in ms]) for k in METRICS]
            paper = None if stage == "stage1" else PAPER_TABLE2.get(dataset, {}).get(model)
            used += ms
            means = [sum(m[protocol]["test"][k] for m in ms) / len(ms)
                     for k in ("HR@20", "NDCG@20")]
            rows.append([NAMES[model] if stage is None else "stage1 (ADRec stage 1)", *cells,
                         f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "–",
                         replication_cell(means, paper),
                         "–" if (model, stage) == ("sasrec", None) else
                         paired_cell(runs, model, stage, protocol),
                         fmt_mean_sd([m["wall_seconds"] for m in ms], 0), str(len(ms))])
        if rows:
            tables.append((f"table2-{protocol}", Table(
                title=f"Table 2 ({dataset}, {protocol} protocol): test metrics in %, "
                      "mean ± sd over seeds",
                columns=["Model", *METRICS, "paper HR@20 / NDCG@20", "within 5% of the paper",
                         "vs SASRec+: Δ NDCG@20 [95% CI]", "train+eval s", "seeds"],
                rows=rows, stamp={"protocol": protocol, **training_stamp(used), **stamp},
                notes=["Selection and metrics follow the protocol (README: Evaluation). "
                       "Time: the sum of training and validation seconds of all stages.",
                       "Within 5%: the seed mean of HR@20 and of NDCG@20 each within ±5% "
                       "(relative) of the paper's value: yes, or the two gaps.",
                       "vs SASRec+: paired per-user difference in strict test NDCG@20 against "
                       "SASRec+ of the same seeds (each user's difference averaged over the "
                       "seeds both have), 95% paired bootstrap interval over users (2000 "
                       "resamples, seed 0), Wilcoxon signed-rank p (collapse_kit.paired); "
                       "needs the per-user ranks that checkpoints keep since 2026-12-06 "
                       "(test_ranks)."])))
    return tables


REPLICATION_TOLERANCE = 0.05


def strict_ordering(runs: list[Run]) -> str:
    """One sentence: the models ordered by their mean strict test HR@20 over the seeds each
    has ("ADRec (22.07) > SASRec+ (...) > ..."), and the models without a strict run."""
    means = {}
    for model in PAPER_ORDER:
        ms = _finished_metrics(_main_runs(runs, model, "strict"))
        if ms:
            means[NAMES[model]] = sum(m["strict"]["test"]["HR@20"] for m in ms) / len(ms)
    order = sorted(means, key=means.get, reverse=True)
    missing = [NAMES[m] for m in PAPER_ORDER if NAMES[m] not in means]
    text = ("Strict protocol, mean test HR@20 over the seeds each model has: "
            + " > ".join(f"{name} ({means[name]:.2f})" for name in order) + ".")
    return text + (f" No strict run for: {', '.join(missing)}." if missing else "")


def replication_cell(ours: list[float], paper) -> str:
    """``yes`` when both means (HR@20, NDCG@20) are within ±5% of the paper's, else the gaps;
    ``–`` without a paper row."""
    if not paper:
        return "–"
    gaps = [(o - p) / p for o, p in zip(ours, paper)]
    if all(abs(g) <= REPLICATION_TOLERANCE for g in gaps):
        return "yes"
    return "no (" + " / ".join(f"{100 * g:+.1f}%" for g in gaps) + ")"


def paired_cell(runs: list[Run], model: str, stage: str | None, protocol: str) -> str:
    """``Δ [lo, hi], p`` of ``model`` against SASRec+ on the seeds where both runs kept their
    per-user test ranks; ``n/a`` and why otherwise."""
    from adrec.checkpoint import checked_test_ranks
    from adrec.evaluate import ranking_metrics
    from collapse_kit.paired import paired_comparison

    def ranks(name, st):
        out = {}
        for r in _main_runs(runs, name, protocol):
            ck = r.checkpoint(st)
            got = None if ck is None else checked_test_ranks(ck, r.path(st))
            if got is not None:
                out[r.spec.seed] = got.numpy()
        return out

    if not _main_runs(runs, "sasrec", protocol):
        return "– (no SASRec+ run)"
    mine, base = ranks(model, stage), ranks("sasrec", None)
    seeds = sorted(set(mine) & set(base))
    if not seeds:
        return "n/a (no per-user ranks in these runs)"
    res = paired_comparison([100 * ranking_metrics(mine[s])["NDCG@20"] for s in seeds],
                            [100 * ranking_metrics(base[s])["NDCG@20"] for s in seeds],
                            n_resamples=2000, random_state=0)
    p = "n/a" if res["p_wilcoxon"] is None else f"{res['p_wilcoxon']:.2g}"
    return (f"{res['delta']:+.2f} [{res['ci95'][0]:+.2f}, {res['ci95'][1]:+.2f}], p {p}"
            f" ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")


def training_stamp(metrics: list[dict]) -> dict[str, str]:
    """The stamp lines saying where and at which matrix-product precision the runs of a table
    trained (``Run.metrics`` records, each value once, sorted)."""
    return {"trained on": ", ".join(sorted({m["trained_on"] for m in metrics})),
            "matmul precision": ", ".join(sorted({m["matmul_precision"] for m in metrics}))}


def ablation_tables(runs: list[Run], stamp: dict) -> list[tuple[str, Table]]:
    """Table 4: ADRec and its variants (strict protocol), beside the paper's rows."""
    from adrec.config import ABLATIONS

    variants = [v for v in ABLATIONS if any(r.spec.variant == v for r in runs)]
    if not variants:
        return []
    dataset = runs[0].spec.dataset_key
    rows, used = [], []
    for name in ["ADRec", *variants]:
        variant = "" if name == "ADRec" else name
        ms = _finished_metrics(r for r in runs if r.spec.model == "adrec"
                               and r.spec.variant == variant and r.spec.protocol == "strict")
        if not ms:
            continue
        used += ms
        paper = PAPER_TABLE4.get(dataset, {}).get(name)
        rows.append([name, fmt_mean_sd([m["strict"]["test"]["HR@20"] for m in ms]),
                     fmt_mean_sd([m["strict"]["test"]["NDCG@20"] for m in ms]),
                     f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "–", str(len(ms))])
    return [("table4", Table(
        title=f"Table 4 ({dataset}): ADRec ablations, test HR@20 / NDCG@20 in %, strict protocol",
        columns=["Variant", "HR@20", "NDCG@20", "paper HR@20 / NDCG@20", "seeds"], rows=rows,
        stamp={"protocol": "strict", **training_stamp(used), **stamp},
        notes=["Variants start from the stage-1 checkpoint of the main ADRec run of the same "
               "seed, except the end-to-end ones as the paper describes them: w/o pre-train "
               "(no stages 1 and 2, E from N(0, 1)) and w/o mse (end-to-end and CE only)."]))]


# -- the item tables analysed (Tables 5 and 6, the figures) -----------------------------------

def item_tables(runs: list[Run]) -> list[tuple[str, Run, str | None]]:
    """(name, run, stage) of the lowest seed's final tables, ADRec's stages included, from the
    strict runs; a model whose strict table was stripped for transport (light checkpoints) or
    that has no strict run falls back to the same seed's official-protocol run."""
    found = []
    seed0 = min(r.spec.seed for r in runs)
    for model in PAPER_ORDER:
        for protocol in ("strict", "official"):
            run = next(iter(_main_runs(runs, model, protocol, seed0)), None)
            if run is None:
                continue
            got = []
            if model == "adrec":
                got = [(label, run, stage) for stage, label in ADREC_STAGES
                       if run.has_table(stage)]
                if not got and run.has_table():
                    got.append(("ADRec", run, None))  # only the final table was kept
            elif run.has_table():
                got.append((NAMES[model], run, None))
            if got:
                found.extend(got)
                break
    return found


def _item_arrays(runs: list[Run]) -> dict:
    """{name: item table (n_items, d)} of ``item_tables`` (empty when no run has one)."""
    return {name: run.item_table(stage) for name, run, stage in item_tables(runs)}


def _gaussian_like(tables: dict):
    """The reports' reference: a seed-0 Gaussian table of the item tables' shape."""
    from collapse_kit.metrics import gaussian_table

    return gaussian_table(*next(iter(tables.values())).shape, random_state=0)


def embedding_checkpoints(specs: list[RunSpec], out: Path) -> list[tuple[str, Path]]:
    """(name, checkpoint path) of ``item_tables`` for run specs (notebooks, tests)."""
    return [(name, run.path(stage))
            for name, run, stage in item_tables([Run(s, out) for s in specs])]


def embedding_tables(runs: list[Run], stamp: dict, *, bootstrap: int) -> list[tuple[str, Table]]:
    """Table 5 (with the corrected metrics and a same-shape Gaussian row), Table 5 against the
    paper's values, and bootstrap intervals when ``bootstrap`` >= 2."""
    from collapse_kit.analyze import (COMPARE_COLUMNS, CORRECTED_COLUMNS, analyze,
                                      comparison_cells, compare_metrics)

    found = item_tables(runs)
    if not found:
        return []
    dataset = runs[0].spec.dataset_key
    tables = {name: run.item_table(stage) for name, run, stage in found}
    protocol_of = {name: run.spec.protocol for name, run, _ in found}
    rows = [(name, compare_metrics(E, corrected=True)) for name, E in tables.items()]
    rows.append(("Gaussian (same shape, seed 0)",
                 compare_metrics(_gaussian_like(tables), corrected=True)))
    protocols = sorted(set(protocol_of.values()))
    table5 = Table(title=f"Table 5 ({dataset}): embedding metrics of the item tables (seed "
                         f"{min(r.spec.seed for r in runs)}, {' and '.join(protocols)} runs)",
                   columns=["Model"] + [t for _, t in COMPARE_COLUMNS + CORRECTED_COLUMNS],
                   rows=[[name, *comparison_cells(m, corrected=True, bracket_top5=False)]
                         for name, m in rows],
                   stamp=stamp,
                   notes=["Paper variants (top-5 SV ... silhouette) are the authors' formulas "
                          "(docs/metrics.md); KL (log-det) and effective rank are corrected / "
                          "added metrics. The Gaussian row is the same-shape reference."]
                         + [f"{name}: from the official-protocol run (the strict run's table "
                            "is not in this folder)." for name, p in protocol_of.items()
                            if p == "official" and "strict" in protocols])
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
    if bootstrap >= 2:
        keys = ("singular_value_entropy", "covariance_entropy", "isotropy",
                "kl_to_gaussian_logdet", "effective_rank")
        ci_rows = []
        for name, E in tables.items():
            r = analyze(E, bootstrap=bootstrap, null_draws=1, seed=0)
            ci_rows.append([name] + [_interval_cell(r, k) for k in keys])
        out_tables.append(("table5-intervals", Table(
            title=f"Table 5 intervals ({dataset}): value [95% bootstrap interval over items, "
                  f"{bootstrap} resamples] (G = same-shape Gaussian null)",
            columns=["Model", *keys], rows=ci_rows, stamp=stamp)))
    return out_tables


def _training_popularity(runs: list[Run], n_items: int):
    """Each item's training interactions in the study's dataset (None when its data cannot be
    loaded or does not match the tables)."""
    spec = runs[0].spec.dataset
    path = Path(spec)
    version = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
    counts = _dataset_counts(spec, version)
    return counts if counts is not None and counts.size == n_items else None


@functools.lru_cache(maxsize=8)
def _dataset_counts(spec: str, version):
    """``training_counts`` of a dataset, loaded once per report (the popularity table and the
    popularity figure both read it); None when it cannot be loaded. ``version`` (a data file's
    mtime and size) keys the cache, so a rewritten file is read again."""
    from adrec.data import load_dataset, training_counts

    try:
        return training_counts(load_dataset(spec))
    except (OSError, ValueError):
        return None


def popularity_tables(runs: list[Run], stamp: dict) -> list[tuple[str, Table]]:
    """Collapse and popularity: per item table, the popularity correlations (docs/metrics.md),
    stable rank, participation ratio and the effective rank of the head / torso / tail items."""
    from collapse_kit.popularity import popularity_analysis, rank_statistics

    tables = _item_arrays(runs)
    if not tables:
        return []
    dataset = runs[0].spec.dataset_key
    popularity = _training_popularity(runs, next(iter(tables.values())).shape[0])
    if popularity is None:
        return []
    tables["Gaussian (same shape, seed 0)"] = _gaussian_like(tables)

    rows = []
    for name, E in tables.items():
        r = popularity_analysis(E, popularity, null_draws=0, seed=0)
        r.update(rank_statistics(E))
        direction = (f"{_num(r['popularity_direction_spearman'])} "
                     f"(dir {r['popularity_direction_index']})"
                     if r["popularity_direction_spearman"] is not None else "n/a")
        rows.append([name, _num(r["popularity_norm_spearman"]), _num(r["popularity_norm_pearson"]),
                     direction, _num(r["stable_rank"], 2), _num(r["participation_ratio"], 2),
                     " / ".join(_num(r[g].get("effective_rank"), 1)
                                for g in ("head", "torso", "tail")),
                     " / ".join(_num(r[g].get("mean_cosine_similarity"), 3)
                                for g in ("head", "torso", "tail"))])
    return [("popularity", Table(
        title=f"Collapse and popularity ({dataset}): item popularity = training interactions",
        columns=["Model", "Spearman(pop, norm)", "Pearson(pop, norm)",
                 "max abs Spearman(pop, direction) (index)", "stable rank", "participation ratio",
                 "eff. rank head / torso / tail", "mean cos head / torso / tail"],
        rows=rows, stamp=stamp,
        notes=["Same tables as Table 5. Direction: the top-10 singular direction of E (as it "
               "is) whose projections correlate most with popularity (1 = top direction; "
               "oriented so that the projections sum to >= 0). Head / torso / tail: "
               "popularity terciles (each metric on that third of the items alone). "
               "Formulas: docs/metrics.md."]))]


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

    return (f"{r[key]:.3f} [{_num(r.get(key + '_ci_low'))}, {_num(r.get(key + '_ci_high'))}] "
            f"(G {_num(r.get(key + '_gaussian'))})")


def _num(v, digits: int = 3) -> str:
    """A table cell: ``v`` to ``digits`` decimals, or ``n/a`` for None."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def probe_tables(runs: list[Run], stamp: dict) -> list[tuple[str, Table]]:
    """Table 6: the ML-100K genre probe of every table, with the readable baselines."""
    if runs[0].spec.dataset_key != "ml-100k":
        return []
    from probes.labels import load_item_labels, load_popularity
    from probes.linear import ProbeSettings, probe_columns
    from probes.report import result_rows

    tables = _item_arrays(runs)
    if not tables:
        return []
    n = next(iter(tables.values())).shape[0]
    columns = probe_columns(tables, load_item_labels("ml-100k-genres", n).Y,
                            settings=ProbeSettings(seeds=5),
                            popularity=load_popularity("ml-100k", n))
    header, rows = result_rows(columns)
    return [("table6", Table(
        title="Table 6 (ml-100k): linear genre probe of the item tables, held-out items, "
              "% mean ± sd over 5 random 80/20 item splits",
        columns=header, rows=rows, stamp=stamp,
        notes=["BatchNorm1d + Linear on the frozen table, BCE, Adam lr 0.01, 20 epochs "
               "(probes/). Micro averages are the paper's precision/recall/F1; macro averages "
               "run over the 17 genres that occur."]))]


# -- figures ------------------------------------------------------------------------------------

def draw_figures(runs: list[Run], out: Path, dataset: str) -> list[tuple[str, Path]]:
    """Collapse trajectories, the t-SNE grid (Figure 1 style) and the spectra of the tables."""
    from collapse_kit.monitor import plot_trajectories

    made = []
    seed0 = min(r.spec.seed for r in runs)
    trajs = {}
    for model in PAPER_ORDER:
        run = next(iter(_main_runs(runs, model, "strict", seed0)), None)
        if run is not None and run.folder.exists():
            try:
                trajs[NAMES[model]] = run.trajectory()
            except FileNotFoundError:
                continue
    if any(trajs.values()):
        path = out / "figures" / f"collapse-trajectories-{dataset}.png"
        _save_png(plot_trajectories(trajs), path)
        made.append((f"Collapse statistics during training ({dataset}, seed {seed0}; dotted "
                     "lines: stage boundaries; a stage starts from the previous stage's "
                     "selected epoch, so a curve can step back there)", path))
    tables = _item_arrays(runs)
    if not tables:
        return made
    from collapse_kit.figures import save_figure, spectrum_figure, table_spectrum, tsne_figure
    from collapse_kit.tsne import TSNESettings, tsne_map

    n = next(iter(tables.values())).shape[0]
    tables["Gaussian"] = _gaussian_like(tables)
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
    popularity = _training_popularity(runs, n)
    if popularity is not None:
        from collapse_kit.popularity import plot_popularity

        fig = plot_popularity([(k, E, popularity) for k, E in tables.items()])
        paths = save_figure(fig, out / "figures" / f"popularity-{dataset}")
        made.append((f"Item popularity (training interactions) against the row norm and the "
                     f"popularity direction ({dataset}, seed {seed0})", paths[0]))
    fig = spectrum_figure({k: table_spectrum(E) for k, E in tables.items()},
                          reference="Gaussian", title=f"Singular-value spectra ({dataset})")
    paths = save_figure(fig, out / "figures" / f"spectrum-{dataset}")
    made.append((f"Normalised singular-value spectra of the centred tables ({dataset})",
                 paths[0]))
    return made


def _save_png(fig, path: Path) -> None:
    """The trajectory figure as the reports have always drawn it (150 dpi, tight box), written
    atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
