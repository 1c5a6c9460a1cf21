"""Write the five stage notebooks (``python notebooks/_build.py``) and, with ``--execute``, run
them top to bottom with nbclient and save them with their outputs (what is committed).

The notebooks are generated, not hand-edited: change a cell here and run the script again.

    python notebooks/_build.py                 # write the .ipynb files without outputs
    python notebooks/_build.py --execute       # ... and execute them (committed outputs)
    python notebooks/_build.py --execute 05    # only the notebooks whose name starts with 05

``--execute`` runs with ``COLLAPSE_KIT_PRESET`` (default ``tiny``: the one live-training cell of
each notebook trains for 2 epochs with hidden size 16) and ``COLLAPSE_KIT_TSNE=full`` (the committed
t-SNE grid uses the full settings; CI's fast setting only checks that the cell runs). Every
analysis cell reads the real ML-100K runs in ``results/ml-100k-cpu-shuffled``, whatever the preset.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Cells shared by every notebook

PARAMETERS = '''\
# Parameters (environment variables override them; CI sets both).
import os
from pathlib import Path

# The real ML-100K runs (shuffled batches, trained on a 2-core CPU); relative to this folder.
RUNS = Path(os.environ.get("COLLAPSE_KIT_RUNS", "../results/ml-100k-cpu-shuffled/runs/ml-100k")).resolve()
# Preset of the one cell that trains live: "tiny" (2 epochs, hidden 16: seconds), "quick", "paper".
PRESET = os.environ.get("COLLAPSE_KIT_PRESET", "tiny")
assert RUNS.is_dir(), f"no runs at {RUNS}: set COLLAPSE_KIT_RUNS to a runs/<dataset> folder"
print(f"RUNS = {os.path.relpath(RUNS)}\\nPRESET = {PRESET!r}")'''

IMPORTS_COMMON = '''\
%matplotlib inline
import json
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

plt.rcParams["figure.dpi"] = 100
pd.options.display.float_format = "{:.3f}".format
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets

OUT = RUNS.parents[1]      # the reproduce output folder: OUT/runs/<dataset>/<model>/s<seed>-<protocol>
DATASET = RUNS.name        # "ml-100k"
RUN = RUNS / "adrec" / "s0-strict"   # seed 0, strict protocol: its light checkpoints keep E


def show(fig):
    """Display a matplotlib figure once, whatever the backend (collapse_kit.monitor's
    plot_trajectories selects Agg, after which plt.show() no longer draws inline)."""
    display(fig)
    plt.close(fig)


def read_log(path):
    """A run log (JSON lines, one epoch per line) as a DataFrame; nested records become dotted
    columns ("valid.NDCG@20", "collapse.effective_rank")."""
    lines = Path(path).read_text().splitlines()
    return pd.json_normalize([json.loads(line) for line in lines if line.strip()])'''

LIVE_SETUP = '''\
from adrec.config import TrainConfig
from adrec.pipeline import train_model
from adrec.config import PRESETS
from collapse_kit.monitor import CollapseMonitor

cfg = TrainConfig(**PRESETS[PRESET])
# A small model only for the tiny preset (CI); the other presets train the paper's size (hidden 128).
model_args = {"hidden": 16} if PRESET == "tiny" else {}
work = Path(tempfile.mkdtemp(prefix="collapse-kit-notebook-"))
print(f"preset {PRESET!r}: at most {cfg.epochs} epochs per stage, evaluation every "
      f"{cfg.eval_every}, model args {model_args or 'paper defaults'}")'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, **metadata):
    cell = new_code_cell(text.strip("\n"))
    cell.metadata.update(metadata)
    return cell


def header(title: str, story: str) -> list:
    return [md(f"# {title}\n\n{story}"),
            code(PARAMETERS, tags=["parameters"]),
            code(IMPORTS_COMMON)]


# ---------------------------------------------------------------------------------------------
# 01 data and stage 1

NB01 = header("01 · The data and stage 1: pre-training the item table", """
ADRec (Auto-regressive Diffusion Recommender) trains in three stages; this notebook is the first.

1. **Stage 1, pre-training** (this notebook): a SASRec-style causal Transformer *without* position
   embeddings learns the item table **E** (one 128-d row per item) with cross-entropy over all
   items, until early stopping on valid NDCG@20.
2. Stage 2, warm-up (`02_warmup.ipynb`): E is frozen, the diffusion parts learn.
3. Stage 3, full fine-tuning (`03_full_finetuning.ipynb`): everything trains.

The paper's point is that diffusion recommenders trained end to end leave E close to random noise
("embedding collapse", `04_baselines_and_collapse.ipynb`); pre-training E first is ADRec's remedy.
Here: the ML-100K data (the paper's Table 7), the real stage-1 run (shuffled batches, trained on
a 2-core CPU: `results/ml-100k-cpu-shuffled`), the table it produced compared with a same-shape Gaussian table, and a
tiny stage-1 run trained live. Every number printed below is read from the committed run files.
""") + [
    md("""
## The data: ML-100K, leave-one-out

Users with at least 5 interactions (ratings above the threshold), items in time order. Each user's
last item is the test target, the one before it the validation target; the rest is training
history. The model sees at most the last `max_len = 50` items.
"""),
    code('''\
from adrec.data import load_dataset

ds = load_dataset(DATASET)
pd.DataFrame([ds.stats()])   # the paper's Table 7'''),
    code('''\
lengths = np.array([len(s) for s in ds.train])
max_len = 50   # TrainConfig().max_len, the history window
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(lengths, bins=60, color="0.4")
ax.axvline(max_len, color="C3", ls="--", label=f"max_len = {max_len}")
ax.set(xlabel="training items per user", ylabel="users", yscale="log",
       title=f"{DATASET}: {len(lengths)} users, median {np.median(lengths):.0f} training items")
ax.legend()
show(fig)
print(f"{(lengths > max_len).mean():.0%} of the users have more than {max_len} training items; "
      "the model sees their last 50.")'''),
    md("""
## Stage 1 of the real run

The stage-1 log (`stage1.log.jsonl`) has one line per epoch: the training loss (here CE only) and,
every 5th epoch, the validation metrics and the collapse monitor's statistics of E. Training stops
after 4 evaluations without a better valid NDCG@20; the checkpoint `stage1.pt` holds the best
epoch.
"""),
    code('''\
from collapse_kit.study.runs import RunSpec, run_metrics

log1 = read_log(RUN / "stage1.log.jsonl")
m1 = run_metrics(RunSpec(DATASET, "adrec", 0), OUT, stage="stage1")
best1 = m1["best_epoch"]
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
log1.plot(x="epoch", y="ce", ax=a, legend=False, title="stage 1: training cross-entropy")
ev = log1.dropna(subset=["valid.NDCG@20"])
ev.plot(x="epoch", y=["valid.HR@20", "valid.NDCG@20"], ax=b, marker=".",
        title="stage 1: validation (%)")
for ax in (a, b):
    ax.axvline(best1, color="k", ls=":", lw=1)
show(fig)
t = m1["strict"]["test"]
display(Markdown(
    f"Stage 1 ran **{len(log1)} epochs** ({m1['train_seconds']:.1f} s of training on "
    f"{m1['trained_on']}); the best valid NDCG@20 was at epoch **{best1}** (dotted line). "
    f"On its own, the stage-1 model scores test HR@20 = **{t['HR@20']:.2f}%** and "
    f"NDCG@20 = **{t['NDCG@20']:.2f}%** (strict protocol)."))'''),
    md("""
The collapse monitor (`collapse_kit.monitor`) recorded four cheap statistics of E at every
evaluation: singular-value entropy and top singular value of the column-standardised table,
effective rank, mean row norm. E starts as small Gaussian noise (std 0.1), i.e. isotropic: maximal
entropy and effective rank. Learning concentrates variance in a few directions.
"""),
    code('''\
from collapse_kit.monitor import plot_trajectories, read_trajectory

traj1 = read_trajectory(RUN, stages=["stage1"])
show(plot_trajectories({"ADRec stage 1": traj1}))
first, last = traj1[0], traj1[-1]
print(f"effective rank {first['effective_rank']:.2f} (epoch {first['epoch']}) -> "
      f"{last['effective_rank']:.2f} (epoch {last['epoch']}); top singular value "
      f"{first['top_singular_value']:.1f} -> {last['top_singular_value']:.1f}")'''),
    md("""
## The pre-trained table against a Gaussian

`collapse_kit.analyze.analyze` computes every collapse metric of a table (the paper's Table 5
metrics, corrected ones and more), each next to its value on a same-shape N(0, 1) table: the
"nothing learned" reference. A learned table is *less* isotropic than noise: larger leading
singular values, lower entropy and effective rank, a larger KL to a Gaussian.
"""),
    code('''\
from collapse_kit.analyze import analyze, format_analysis
from collapse_kit.io import load_embeddings

E1 = load_embeddings(RUN / "stage1.pt").table
print(f"stage-1 item table: {E1.shape[0]} items x {E1.shape[1]} dimensions")
res1 = analyze(E1, seed=0)
display(Markdown(format_analysis(res1, "markdown")))'''),
    code('''\
from collapse_kit.figures import spectrum_figure, table_spectrum
from collapse_kit.metrics import gaussian_table

G = gaussian_table(*E1.shape, random_state=0)
spectrum_figure({"ADRec stage 1": table_spectrum(E1), "Gaussian": table_spectrum(G)},
                reference="Gaussian", title=f"Singular-value spectra ({DATASET})")'''),
    md("""
## Try it: a stage-1 run, live

The same API the runs above came from: `adrec.pipeline.train_model("stage1", ...)` with a
`TrainConfig` from a preset and the collapse monitor as a callback. With the `tiny` preset (the
default here, and CI's) it trains 2 epochs of a hidden-16 model, so its numbers only show that the
machinery works; `COLLAPSE_KIT_PRESET=quick` or `paper` trains the real thing (minutes on a CPU).
"""),
    code(LIVE_SETUP),
    code('''\
from collapse_kit.monitor import collapse_stats

live = train_model("stage1", ds, cfg, work / "stage1", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
live_log = read_log(work / "stage1" / "stage1.log.jsonl")
display(live_log[["epoch", "ce", "valid.HR@20", "valid.NDCG@20", "collapse.effective_rank"]])
print("checkpoint:", live.checkpoint.name, "| test (strict, %):",
      {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})
print("collapse statistics of the live table:",
      {k: round(v, 3) for k, v in collapse_stats(load_embeddings(live.checkpoint).table).items()})'''),
]

# ---------------------------------------------------------------------------------------------
# 02 warm-up

NB02 = header("02 · Stage 2: the warm-up with a frozen item table", """
Stage 2 starts the ADRec model proper: the pre-trained table E from stage 1 is copied in, and
the parts that are new — the causal attention module (CAM), the auto-regressive diffusion module
(ADM, the denoiser) and the timestep MLP — train for a few epochs (`warmup_epochs = 5`) with the
full loss, CE + MSE (the denoiser's reconstruction error of the noised target embeddings), while
**E is frozen**: no gradient, not in the optimizer, no weight decay.

Why: freshly initialised diffusion modules produce large, noisy gradients. Let through to E, they
would push the pre-trained table back towards noise before the denoiser has learned anything.
The warm-up lets the new parts catch up first.

This notebook shows the real run's warm-up (losses falling while E does not move), proves that the
table really is unchanged (stage-1 and stage-2 tables are equal), looks at what skipping the
warm-up cost in the real ablation, and runs a tiny three-stage ADRec live.
""") + [
    md("""
## The warm-up of the real run

Five epochs; CE and MSE fall although E is fixed. The one evaluation (after the last epoch) scores
the warmed-up model, which has not been selected on validation (`select=False`).
"""),
    code('''\
from collapse_kit.study.runs import RunSpec, run_metrics

log2 = read_log(RUN / "stage2.log.jsonl")
display(log2[["epoch", "ce", "mse", "loss", "seconds"]])
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, col in zip(axes, ["ce", "mse"]):
    log2.plot(x="epoch", y=col, ax=ax, marker="o", legend=False, title=f"stage 2: {col}")
show(fig)
spec = RunSpec(DATASET, "adrec", 0)
m1 = run_metrics(spec, OUT, stage="stage1")
m2 = run_metrics(spec, OUT, stage="stage2")
v1, v2 = m1["strict"]["valid"], m2["strict"]["valid"]
display(Markdown(
    f"CE {log2.ce.iloc[0]:.3f} → {log2.ce.iloc[-1]:.3f} and MSE {log2.mse.iloc[0]:.3f} → "
    f"{log2.mse.iloc[-1]:.3f} over {len(log2)} epochs ({m2['train_seconds']:.1f} s on "
    f"{m2['trained_on']}). Valid NDCG@20 after the warm-up: **{v2['NDCG@20']:.2f}%**, "
    f"{'below' if v2['NDCG@20'] < v1['NDCG@20'] else 'above'} the {v1['NDCG@20']:.2f}% of the "
    "stage-1 model whose table it uses: the warm-up only prepares the new modules; stage 3 "
    "trains the whole model."))'''),
    md("""
## Proof: the warm-up does not touch E

The light checkpoints keep the item tables, so the stage-1 and stage-2 tables can be compared
directly: they are equal, bit for bit. The collapse monitor's record at the end of stage 2 agrees
with the statistics of the stage-1 table.
"""),
    code('''\
from collapse_kit.io import load_embeddings
from collapse_kit.monitor import collapse_stats

E1 = load_embeddings(RUN / "stage1.pt").table
E2 = load_embeddings(RUN / "stage2.pt").table
E3 = load_embeddings(RUN / "stage3.pt").table
print("stage 1 == stage 2:", np.array_equal(E1, E2),
      f"(max |difference| {np.abs(E1 - E2).max():.1e})")
print("stage 2 == stage 3:", np.array_equal(E2, E3),
      f"(max |difference| {np.abs(E2 - E3).max():.3f}; stage 3 trains E)")
pd.DataFrame({"stage 1 table": collapse_stats(E1), "stage 2 table": collapse_stats(E2),
              "monitor at the end of stage 2": log2.filter(like="collapse.").iloc[-1]
              .rename(lambda k: k.split(".", 1)[1])}).drop("seconds")'''),
    md("""
## What the warm-up is worth: the ablation

The real reproduction also trained ADRec without the warm-up (stage 3 directly after stage 1,
same seed, same stage-1 checkpoint; the paper's Table 4 "w/o warm-up"). One seed each, so
differences below about one point of HR@20 are within seed noise.
"""),
    code('''\
from collapse_kit.study.paper import PAPER_TABLE4

rows = {}
for label, variant in [("ADRec", ""), ("w/o warm-up", "w/o warm-up")]:
    m = run_metrics(RunSpec(DATASET, "adrec", 0, variant=variant), OUT)
    paper = PAPER_TABLE4[DATASET].get(label, (np.nan, np.nan))
    rows[label] = {"test HR@20": m["strict"]["test"]["HR@20"],
                   "test NDCG@20": m["strict"]["test"]["NDCG@20"],
                   "stage-3 epochs": m["stages"]["stage3"]["epochs"],
                   "paper HR@20": paper[0], "paper NDCG@20": paper[1]}
pd.DataFrame(rows).T.astype({"stage-3 epochs": int})'''),
    md("""
## Try it: three stages, live

`train_model("adrec", ...)` runs stage 1, the warm-up and stage 3 into one folder
(`stage1.pt`, `stage2.pt`, `stage3.pt`, `best.pt`, a log per stage). The same check as above on
the live run: E is identical before and after the warm-up, and moves in stage 3.
"""),
    code(LIVE_SETUP),
    code('''\
from adrec.data import load_dataset

ds = load_dataset(DATASET)
# tiny preset only: a 4-step diffusion chain instead of the paper's 32 (faster evaluation)
adrec_args = {**model_args, "steps": 4} if PRESET == "tiny" else model_args
live = train_model("adrec", ds, cfg, work / "adrec", model_args=adrec_args, progress=False,
                   callbacks=[CollapseMonitor()])
display(pd.DataFrame(live.metrics["stages"]).T.astype({"epochs": int}))
L1, L2, L3 = (load_embeddings(work / "adrec" / f"stage{i}.pt").table for i in (1, 2, 3))
print("live: stage 1 == stage 2:", np.array_equal(L1, L2), "| stage 2 == stage 3:",
      np.array_equal(L2, L3))
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})'''),
]

# ---------------------------------------------------------------------------------------------
# 03 full fine-tuning

NB03 = header("03 · Stage 3: full fine-tuning", """
Stage 3 unfreezes everything: E, CAM, the denoiser and the timestep MLP train together on
CE + MSE until early stopping on valid NDCG@20 (strict protocol: one selection metric, metrics
over all users). The selected epoch becomes `stage3.pt` and the run's product `best.pt`.

At inference ADRec noises only the last position and denoises it step by step, with the history
clean; the score of an item is the final prediction's dot product with its row of E.

This notebook shows the real run's stage 3 (losses and validation), the collapse statistics across
all three stages, how the table's spectrum and collapse metrics move from stage 1 to stage 3, and
ADRec's test metrics over three seeds; it then runs stage 3 live from a stage-1 checkpoint.
""") + [
    md("## Stage 3 of the real run"),
    code('''\
from collapse_kit.study.runs import RunSpec, run_metrics

spec = RunSpec(DATASET, "adrec", 0)
log3 = read_log(RUN / "stage3.log.jsonl")
m3 = run_metrics(spec, OUT, stage="stage3")
best3 = m3["best_epoch"]
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
log3.plot(x="epoch", y=["ce", "mse"], ax=a, title="stage 3: training losses")
ev = log3.dropna(subset=["valid.NDCG@20"])
ev.plot(x="epoch", y=["valid.HR@20", "valid.NDCG@20"], ax=b, marker=".",
        title="stage 3: validation (%)")
for ax in (a, b):
    ax.axvline(best3, color="k", ls=":", lw=1)
show(fig)
t = m3["strict"]["test"]
display(Markdown(
    f"Stage 3 ran **{len(log3)} epochs** ({m3['train_seconds']:.1f} s of training on "
    f"{m3['trained_on']}) and selected epoch **{best3}** (dotted line): test HR@20 = "
    f"**{t['HR@20']:.2f}%**, NDCG@20 = **{t['NDCG@20']:.2f}%**."))'''),
    md("""
## The item table through the three stages

The collapse monitor's trajectory over the whole run (dotted lines: stage boundaries; each stage
starts from the previous stage's *selected* epoch, so a curve can step back there). Flat in the
warm-up (E frozen), moving again in stage 3.
"""),
    code('''\
from collapse_kit.monitor import plot_trajectories, read_trajectory

show(plot_trajectories({"ADRec (seed 0)": read_trajectory(RUN)}))'''),
    md("""
Stage 3 does not undo the pre-training: the table moves further *away* from the Gaussian
reference (steeper spectrum, larger leading singular values, lower effective rank). This is the
opposite of collapse towards noise; note that "less isotropic" is not by itself "better" —
`05_probes_and_tsne.ipynb` checks what the tables encode.
"""),
    code('''\
from collapse_kit.analyze import COMPARE_COLUMNS, CORRECTED_COLUMNS, compare_metrics
from collapse_kit.figures import spectrum_figure, stage_figure, table_spectrum
from collapse_kit.io import load_embeddings
from collapse_kit.metrics import gaussian_table

stages = ["stage1", "stage2", "stage3"]
tables = {s: load_embeddings(RUN / f"{s}.pt").table for s in stages}
G = gaussian_table(*tables["stage1"].shape, random_state=0)
spectrum_figure({"ADRec stage 1": table_spectrum(tables["stage1"]),
                 "ADRec stage 3": table_spectrum(tables["stage3"]),
                 "Gaussian": table_spectrum(G)},
                reference="Gaussian", title=f"Singular-value spectra ({DATASET}, seed 0)")'''),
    code('''\
titles = dict(COMPARE_COLUMNS + CORRECTED_COLUMNS)
keys = ["singular_value_entropy", "covariance_entropy", "isotropy", "kl_to_gaussian_logdet",
        "effective_rank", "singular_value_variance"]
per_stage = [compare_metrics(tables[s], corrected=True) for s in stages]
gauss = compare_metrics(G, corrected=True)
values = {titles[k]: [m[k] for m in per_stage] for k in keys}
reference = {titles[k]: gauss[k] for k in keys}
stage_metrics = [run_metrics(spec, OUT, stage=s) for s in stages]
for k in ["HR@20", "NDCG@20"]:
    values[f"test {k} (%)"] = [m["strict"]["test"][k] for m in stage_metrics]
stage_figure(values, ["stage 1", "stage 2", "stage 3"], reference=reference, ncols=4,
             title="Item-table metrics and test accuracy per stage (dashed: Gaussian table)")'''),
    md("""
## ADRec's test metrics over seeds

`best.pt` of each seed stores the test metrics of its selected epoch under both protocols
(strict: selection on valid NDCG@20, metrics over all users; official: the released code's
selection and batch-averaged metrics). Mean ± sd over the seeds found in `RUNS`, next to the paper.
"""),
    code('''\
from collapse_kit.study.paper import METRICS, PAPER_TABLE2
from collapse_kit.tables import fmt_mean_sd

seeds = sorted(int(p.name[1:].split("-")[0]) for p in (RUNS / "adrec").glob("s*-strict"))
rows = {}
for protocol in ("strict", "official"):
    ms = [m for m in (run_metrics(RunSpec(DATASET, "adrec", s, protocol), OUT) for s in seeds) if m]
    rows[protocol] = {k: fmt_mean_sd([m[protocol]["test"][k] for m in ms]) for k in METRICS}
    rows[protocol]["seeds"] = len(ms)
paper = PAPER_TABLE2.get(DATASET, {}).get("adrec")
if paper:
    rows["paper"] = {"HR@20": f"{paper[0]:.2f}", "NDCG@20": f"{paper[1]:.2f}"}
pd.DataFrame(rows).T.fillna("")'''),
    md("""
## Try it: stage 3 from a stage-1 checkpoint, live

The ablations reuse the main run's stage 1: `train_model("adrec", ..., stage1=CKPT)` skips
pre-training and starts the warm-up and stage 3 from that table (ours or the authors'
`pretrain.pth`). Here a tiny stage 1 is trained first, then ADRec from it. (The committed light
checkpoints have no model weights, so the real stage-1 table cannot seed a live run.)
"""),
    code(LIVE_SETUP),
    code('''\
from adrec.data import load_dataset
from collapse_kit.monitor import collapse_stats

ds = load_dataset(DATASET)
pre = train_model("stage1", ds, cfg, work / "stage1", model_args=model_args, progress=False)
# tiny preset only: a 4-step diffusion chain instead of the paper's 32 (faster evaluation)
adrec_args = {**model_args, "steps": 4} if PRESET == "tiny" else model_args
live = train_model("adrec", ds, cfg, work / "adrec", model_args=adrec_args, progress=False,
                   callbacks=[CollapseMonitor()], stage1=pre.checkpoint)
print("stages trained:", sorted(p.name for p in (work / "adrec").glob("*.pt")))
display(pd.DataFrame({s: collapse_stats(load_embeddings(work / "adrec" / f"{s}.pt").table)
                      for s in ["stage2", "stage3"]}))
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})'''),
]

# ---------------------------------------------------------------------------------------------
# 04 baselines and collapse

NB04 = header("04 · Baselines and embedding collapse", """
ADRec is compared with three sequential recommenders, all trained by this package with the same
data, protocol and early stopping:

* **SASRec+**: a causal Transformer trained with cross-entropy over all items;
* **DiffuRec**: diffusion on item embeddings, one noised target per training prefix;
* **DreamRec**: guided diffusion that generates the next item's embedding.

The paper's argument: the diffusion baselines leave their item tables close to random noise —
*embedding collapse* in the sense that the table keeps the isotropic spectrum of its Gaussian
initialisation and stops carrying item structure — and their accuracy suffers; ADRec pre-trains
E and freezes it during the warm-up to avoid that.

This notebook puts the real runs side by side: the paper's Table 2 (accuracy, mean ± sd over
seeds), Table 5 (embedding metrics of the item tables, with a same-shape Gaussian row) and the
collapse monitor's trajectories during training; then it trains a tiny SASRec+ live.

A model with no run in `RUNS` is left out of every table and figure below. The default runs
(`results/ml-100k-cpu-shuffled`, shuffled batches) hold all four models; DiffuRec and DreamRec
have seed 0 only (one DiffuRec run took about an hour of the 2-core CPU they were trained on).
The earlier, length-bucketed H200 runs are one variable away:
`COLLAPSE_KIT_RUNS=../results/ml-100k-h200/runs/ml-100k` (`results/README.md` says how bucketing
lowered those numbers).
""") + [
    md("## Table 2: test accuracy (%)"),
    code('''\
from collapse_kit.study.paper import METRICS, NAMES, PAPER_ORDER, PAPER_TABLE2
from collapse_kit.study.runs import RunSpec, run_metrics
from collapse_kit.tables import fmt_mean_sd

seeds = sorted(int(p.name[1:].split("-")[0]) for p in (RUNS / "adrec").glob("s*-strict"))
table2, strict_hr = [], {}
for protocol in ("strict", "official"):
    for model in PAPER_ORDER:
        ms = [run_metrics(RunSpec(DATASET, model, s, protocol), OUT) for s in seeds]
        ms = [m for m in ms if m]
        if not ms:
            continue
        if protocol == "strict":
            strict_hr[NAMES[model]] = np.mean([m["strict"]["test"]["HR@20"] for m in ms])
        paper = PAPER_TABLE2.get(DATASET, {}).get(model)
        table2.append({"protocol": protocol, "model": NAMES[model],
                       **{k: fmt_mean_sd([m[protocol]["test"][k] for m in ms]) for k in METRICS},
                       "paper HR@20 / NDCG@20": f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "",
                       "train+eval s": fmt_mean_sd([m["wall_seconds"] for m in ms], 0),
                       "trained on": ", ".join(sorted({m["trained_on"] for m in ms})),
                       "seeds": len(ms)})
table2 = pd.DataFrame(table2).set_index(["protocol", "model"])
table2'''),
    code('''\
order = sorted(strict_hr, key=strict_hr.get, reverse=True)
missing = [NAMES[m] for m in PAPER_ORDER if NAMES[m] not in strict_hr]
display(Markdown("Strict protocol, mean test HR@20 over the seeds each model has: " + " > ".join(
    f"{name} ({strict_hr[name]:.2f})" for name in order) + "." + (
    f" No strict run in `RUNS` for: {', '.join(missing)} (see the note above)." if missing else "")))'''),
    md("""
## Table 5: what the item tables look like

The paper's embedding metrics of each model's final item table (seed 0, strict runs; ADRec at
each stage), computed on the committed tables by `collapse_kit.analyze.compare_metrics`, plus the
two corrected/added columns (KL with a log-determinant, effective rank) and a same-shape Gaussian
row. A table that *looks like the Gaussian row* kept the spectrum of its random initialisation.
"""),
    code('''\
from collapse_kit.analyze import compare_metrics, format_comparison
from collapse_kit.study.report import embedding_checkpoints
from collapse_kit.study.runs import plan_runs
from collapse_kit.io import load_embeddings
from collapse_kit.metrics import gaussian_table

plan = plan_runs([DATASET], list(PAPER_ORDER), 1, protocols=["strict"])
tables = {name: load_embeddings(path).table for name, path in embedding_checkpoints(plan, OUT)}
n, d = next(iter(tables.values())).shape
tables["Gaussian (same shape, seed 0)"] = gaussian_table(n, d, random_state=0)
rows = [(name, compare_metrics(E, corrected=True)) for name, E in tables.items()]
display(Markdown(format_comparison(rows, "markdown", corrected=True)))'''),
    code('''\
metrics = dict(rows)
gauss = metrics["Gaussian (same shape, seed 0)"]
closest = pd.DataFrame({name: {"isotropy": m["isotropy"],
                               "KL (log-det) - Gaussian's": m["kl_to_gaussian_logdet"]
                               - gauss["kl_to_gaussian_logdet"],
                               "eff. rank - Gaussian's": m["effective_rank"] - gauss["effective_rank"]}
                        for name, m in metrics.items()}).T
closest'''),
    md("""
Read the differences to the Gaussian row: DreamRec's table sits on it in KL (log-det), effective
rank and isotropy, DiffuRec's close to it in KL and effective rank (less isotropic), while SASRec+ and every ADRec stage moved far from it. Table 5 intervals (bootstrap over items) are in the report beside the runs
(`OUT / "report.md"`: `results/ml-100k-cpu-shuffled/report.md` for the default runs).

## Collapse trajectories during training

The collapse monitor's statistics at every evaluation of the seed-0 strict runs (ADRec: its three
stages one after the other, dotted boundaries). All tables start at the statistics of random
noise. DreamRec's curves stay near them; SASRec+ and ADRec's stage 1 soon leave them, and ADRec's
stage 3 goes further.
"""),
    code('''\
from collapse_kit.monitor import plot_trajectories, read_trajectory

trajectories = {NAMES[m]: read_trajectory(RUNS / m / "s0-strict") for m in PAPER_ORDER
                if (RUNS / m / "s0-strict").is_dir()}
show(plot_trajectories(trajectories))
pd.DataFrame({name: {"first eff. rank": t[0]["effective_rank"],
                     "last eff. rank": t[-1]["effective_rank"],
                     "first top SV": t[0]["top_singular_value"],
                     "last top SV": t[-1]["top_singular_value"], "evaluations": len(t)}
              for name, t in trajectories.items()}).T.astype({"evaluations": int})'''),
    md("""
## Try it: a baseline, live

Any model trains through the same `train_model` call; the collapse monitor writes its statistics
into the run log, and `read_trajectory` reads them back exactly as for the real runs above.
"""),
    code(LIVE_SETUP),
    code('''\
from adrec.data import load_dataset

ds = load_dataset(DATASET)
live = train_model("sasrec", ds, cfg, work / "sasrec", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
display(pd.DataFrame(read_trajectory(work / "sasrec")).drop(columns="seconds"))
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})'''),
]

# ---------------------------------------------------------------------------------------------
# 05 probes and t-SNE

NB05 = header("05 · What the tables encode: genre probe and t-SNE", """
Spectra and entropies say how a table's variance is spread, not what it means. Two checks of
content:

* **Linear genre probe (the paper's Table 6)**: can a linear classifier (BatchNorm + Linear, BCE,
  trained on 80% of the items, scored on the held-out 20%) read an item's genres from its row of
  E? Nothing in training saw genres, so whatever the probe finds the recommender learned from
  interactions alone. A same-shape Gaussian table (chance), popularity alone and the all-zero
  predictor are the floors.
* **t-SNE (the paper's Figure 1 style)**: 2-D maps of the item tables drawn as densities on one
  shared scale, the same-shape Gaussian table the reference; a table that looks like the Gaussian
  panel has no structure a map can show.

Both on the real seed-0 tables; then a probe of a tiny table trained live.
""") + [
    md("## Table 6: linear genre probe"),
    code('''\
from collapse_kit.study.paper import PAPER_ORDER
from collapse_kit.study.report import embedding_checkpoints
from collapse_kit.study.runs import plan_runs
from collapse_kit.io import load_embeddings
from probes.labels import load_item_labels, load_popularity
from probes.linear import ProbeSettings, probe_columns, probe_with_baselines
from collapse_kit.tables import Table
from probes.report import result_rows

plan = plan_runs([DATASET], list(PAPER_ORDER), 1, protocols=["strict"])
tables = {name: load_embeddings(path).table for name, path in embedding_checkpoints(plan, OUT)}
n = next(iter(tables.values())).shape[0]
labels = load_item_labels(f"{DATASET}-genres", n)
popularity = load_popularity(DATASET, n)
settings = ProbeSettings(seeds=5)
# every table, then the baselines (Gaussian, popularity, all-zero) on the same item splits
columns = probe_columns(tables, labels.Y, settings=settings, popularity=popularity)
display(Markdown(Table(*result_rows(columns), align="l" + "r" * len(columns)).render()))'''),
    code('''\
f1 = {name: r.mean["micro_f1"] * 100 for name, r in columns}
best = max(f1, key=f1.get)
floor = f1["Gaussian table"]
near = [name for name in tables if f1[name] - floor < 2.0]
display(Markdown(
    f"Micro F1 on held-out items: best **{best}** ({f1[best]:.1f}%); the same-shape Gaussian table "
    f"(random features) scores {floor:.1f}%. Within 2 points of it: "
    f"{', '.join(near) or 'none'}. Ranking: " + " > ".join(
        f"{name} ({f1[name]:.1f})" for name in sorted(tables, key=f1.get, reverse=True)) + "."))'''),
    md("""
## t-SNE of the item tables

One panel per table (seed 0), all drawn in one shared window (`shared_scale=True`, so sizes can be
compared; no magnification). With the same t-SNE settings, a noise-like table gives a small round
blob like the Gaussian panel's; a table with item structure spreads into lobes and clusters.
ADRec stage 2 is left out: its table *is* stage 1's (`02_warmup.ipynb`).

`TSNE` (parameter below) picks the settings: `"full"` is the reports' `TSNESettings()` (perplexity
30, 250 early-exaggeration + 500 iterations); `"fast"` (the default with the tiny preset, i.e. in
CI) runs 50 + 50 iterations, enough to check the cell, not to read the maps. The committed output
of this notebook was made with `"full"`.
"""),
    code('''\
TSNE = os.environ.get("COLLAPSE_KIT_TSNE", "fast" if PRESET == "tiny" else "full")
print(f"TSNE = {TSNE!r}")''', tags=["parameters"]),
    code('''\
from collapse_kit.figures import tsne_figure
from collapse_kit.metrics import gaussian_table
from collapse_kit.tsne import TSNESettings, tsne_map

tsne_settings = (TSNESettings() if TSNE == "full"
                 else TSNESettings(early_exaggeration_iter=50, n_iter=50))
panels = {name: E for name, E in tables.items() if "stage 2" not in name}
panels["Gaussian"] = gaussian_table(*next(iter(tables.values())).shape, random_state=0)
maps = [tsne_map(E, tsne_settings) for E in panels.values()]
tsne_figure(maps, list(panels), shared_scale=True, reference="Gaussian", panel_size=2.3,
            title=f"t-SNE of the item tables ({DATASET}, seed 0; {TSNE} settings)")'''),
    md("""
## Try it: probe a table trained live

A tiny SASRec+ (2 epochs, hidden 16 with the tiny preset) against the Gaussian and popularity
floors on the same splits. After two epochs it has learned little, and the probe says so.
"""),
    code(LIVE_SETUP),
    code('''\
from adrec.data import load_dataset

ds = load_dataset(DATASET)
live = train_model("sasrec", ds, cfg, work / "sasrec", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
E_live = load_embeddings(live.checkpoint).table
res = probe_with_baselines(E_live, labels.Y, settings=settings, popularity=popularity)
live_columns = [("live SASRec+", res["model"]), ("Gaussian table", res["gaussian"]),
                ("popularity only", res["popularity"])]
display(Markdown(Table(*result_rows(live_columns), align="lrrr").render()))'''),
]

NOTEBOOKS = {
    "01_data_and_stage1.ipynb": NB01,
    "02_warmup.ipynb": NB02,
    "03_full_finetuning.ipynb": NB03,
    "04_baselines_and_collapse.ipynb": NB04,
    "05_probes_and_tsne.ipynb": NB05,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[c.copy() for c in NOTEBOOKS[name]])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.language_info = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, *, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    client.execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--execute", action="store_true", help="run and save with outputs")
    p.add_argument("only", nargs="*", help="name prefixes of the notebooks to write")
    args = p.parse_args(argv)
    os.environ.setdefault("COLLAPSE_KIT_PRESET", "tiny")
    os.environ.setdefault("COLLAPSE_KIT_TSNE", "full")
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # shared 2-core machine: no oversubscription
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in NOTEBOOKS:
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        nb = build(name)
        t0 = time.time()
        if args.execute:
            execute(nb)
        nbformat.validate(nb)
        path = HERE / name
        nbformat.write(nb, path)
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB"
              + (f", executed in {time.time() - t0:.0f} s" if args.execute else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
