"""04_baselines_and_collapse.ipynb: the cells of the notebook in jupytext's percent format (build it with
python notebooks/_build.py --execute)."""


# %% [markdown]
# # 04 · Baselines and embedding collapse
#
#
# ADRec is compared with three sequential recommenders, all trained by this package with the same
# data, protocol and early stopping:
#
# * **SASRec+**: a causal Transformer trained with cross-entropy over all items;
# * **DiffuRec**: diffusion on item embeddings, one noised target per training prefix;
# * **DreamRec**: guided diffusion that generates the next item's embedding.
#
# The paper's argument: the diffusion baselines leave their item tables close to random noise —
# *embedding collapse* in the sense that the table keeps the isotropic spectrum of its Gaussian
# initialisation and stops carrying item structure — and their accuracy suffers; ADRec pre-trains
# E and freezes it during the warm-up to avoid that.
#
# This notebook puts the real runs side by side: the paper's Table 2 (accuracy, mean ± sd over
# seeds), Table 5 (embedding metrics of the item tables, with a same-shape Gaussian row) and the
# collapse monitor's trajectories during training; then it trains a tiny SASRec+ live.
#
# A model with no run in `RUNS` is left out of every table and figure below. The default runs
# (`results/ml-100k-cpu-shuffled`, shuffled batches) hold all four models; DiffuRec and DreamRec
# have seed 0 only (one DiffuRec run took about an hour of the 2-core CPU they were trained on).
# The earlier, length-bucketed H200 runs are one variable away:
# `COLLAPSE_KIT_RUNS=../results/ml-100k-h200/runs/ml-100k` (`results/README.md` says how bucketing
# lowered those numbers).


# %% include="parameters"


# %% include="setup"


# %% [markdown]
# ## Table 2: test accuracy (%)


# %%
from collapse_kit.study.report import accuracy_tables, strict_ordering
from collapse_kit.study.runs import find_runs

runs = find_runs(OUT, DATASET)
for _, table in accuracy_tables(runs, stamp={}):
    display(Markdown(table.render("markdown")))
display(Markdown(strict_ordering(runs)))


# %% [markdown]
# ## Table 5: what the item tables look like
#
# The paper's embedding metrics of each model's final item table (seed 0, strict runs; ADRec at
# each stage), computed on the committed tables by `collapse_kit.analyze.compare_metrics`, plus the
# two corrected/added columns (KL with a log-determinant, effective rank) and a same-shape Gaussian
# row. A table that *looks like the Gaussian row* kept the spectrum of its random initialisation.


# %%
from collapse_kit.analyze import compare_metrics, format_comparison
from collapse_kit.study.report import embedding_checkpoints
from collapse_kit.study.runs import plan_runs
from collapse_kit.io import load_embeddings
from collapse_kit.metrics import gaussian_table
from collapse_kit.study.paper import NAMES, PAPER_ORDER

plan = plan_runs([DATASET], list(PAPER_ORDER), 1, protocols=["strict"])
tables = {name: load_embeddings(path).table for name, path in embedding_checkpoints(plan, OUT)}
n, d = next(iter(tables.values())).shape
tables["Gaussian (same shape, seed 0)"] = gaussian_table(n, d, random_state=0)
rows = [(name, compare_metrics(E, corrected=True)) for name, E in tables.items()]
display(Markdown(format_comparison(rows, "markdown", corrected=True)))


# %%
metrics = dict(rows)
gauss = metrics["Gaussian (same shape, seed 0)"]
closest = pd.DataFrame({name: {"isotropy": m["isotropy"],
                               "KL (log-det) - Gaussian's": m["kl_to_gaussian_logdet"]
                               - gauss["kl_to_gaussian_logdet"],
                               "eff. rank - Gaussian's": m["effective_rank"] - gauss["effective_rank"]}
                        for name, m in metrics.items()}).T
closest


# %% [markdown]
# Read the differences to the Gaussian row: DreamRec's table sits on it in KL (log-det), effective
# rank and isotropy, DiffuRec's close to it in KL and effective rank (less isotropic), while SASRec+ and every ADRec stage moved far from it. Table 5 intervals (bootstrap over items) are in the report beside the runs
# (`OUT / "report.md"`: `results/ml-100k-cpu-shuffled/report.md` for the default runs).
#
# ## Collapse trajectories during training
#
# The collapse monitor's statistics at every evaluation of the seed-0 strict runs (ADRec: its three
# stages one after the other, dotted boundaries). All tables start at the statistics of random
# noise. DreamRec's curves stay near them; SASRec+ and ADRec's stage 1 soon leave them, and ADRec's
# stage 3 goes further.


# %%
from collapse_kit.monitor import plot_trajectories, read_trajectory

trajectories = {NAMES[m]: read_trajectory(RUNS / m / "s0-strict") for m in PAPER_ORDER
                if (RUNS / m / "s0-strict").is_dir()}
show(plot_trajectories(trajectories))
pd.DataFrame({name: {"first eff. rank": t[0]["effective_rank"],
                     "last eff. rank": t[-1]["effective_rank"],
                     "first top SV": t[0]["top_singular_value"],
                     "last top SV": t[-1]["top_singular_value"], "evaluations": len(t)}
              for name, t in trajectories.items()}).T.astype({"evaluations": int})


# %% [markdown]
# ## Try it: a baseline, live
#
# Any model trains through the same `train_model` call; the collapse monitor writes its statistics
# into the run log, and `read_trajectory` reads them back exactly as for the real runs above.


# %% include="live_setup"


# %%
from adrec.data import load_dataset

ds = load_dataset(DATASET)
live = train_model("sasrec", ds, cfg, work / "sasrec", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
display(pd.DataFrame(read_trajectory(work / "sasrec")).drop(columns="seconds"))
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})
