"""05_probes_and_tsne.ipynb: the cells of the notebook in jupytext's percent format (build it with
python notebooks/_build.py --execute)."""


# %% [markdown]
# # 05 · What the tables encode: genre probe and t-SNE
#
#
# Spectra and entropies say how a table's variance is spread, not what it means. Two checks of
# content:
#
# * **Linear genre probe (the paper's Table 6)**: can a linear classifier (BatchNorm + Linear, BCE,
#   trained on 80% of the items, scored on the held-out 20%) read an item's genres from its row of
#   E? Nothing in training saw genres, so whatever the probe finds the recommender learned from
#   interactions alone. A same-shape Gaussian table (chance), popularity alone and the all-zero
#   predictor are the floors.
# * **t-SNE (the paper's Figure 1 style)**: 2-D maps of the item tables drawn as densities on one
#   shared scale, the same-shape Gaussian table the reference; a table that looks like the Gaussian
#   panel has no structure a map can show.
#
# Both on the real seed-0 tables; then a probe of a tiny table trained live.


# %% include="parameters"


# %% include="setup"


# %% [markdown]
# ## Table 6: linear genre probe


# %%
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
display(Markdown(Table(*result_rows(columns), align="l" + "r" * len(columns)).render()))


# %%
f1 = {name: r.mean["micro_f1"] * 100 for name, r in columns}
best = max(f1, key=f1.get)
floor = f1["Gaussian table"]
near = [name for name in tables if f1[name] - floor < 2.0]
display(Markdown(
    f"Micro F1 on held-out items: best **{best}** ({f1[best]:.1f}%); the same-shape Gaussian table "
    f"(random features) scores {floor:.1f}%. Within 2 points of it: "
    f"{', '.join(near) or 'none'}. Ranking: " + " > ".join(
        f"{name} ({f1[name]:.1f})" for name in sorted(tables, key=f1.get, reverse=True)) + "."))


# %% [markdown]
# ## t-SNE of the item tables
#
# One panel per table (seed 0), all drawn in one shared window (`shared_scale=True`, so sizes can be
# compared; no magnification). With the same t-SNE settings, a noise-like table gives a small round
# blob like the Gaussian panel's; a table with item structure spreads into lobes and clusters.
# ADRec stage 2 is left out: its table *is* stage 1's (`02_warmup.ipynb`).
#
# `TSNE` (parameter below) picks the settings: `"full"` is the reports' `TSNESettings()` (perplexity
# 30, 250 early-exaggeration + 500 iterations); `"fast"` (the default with the tiny preset, i.e. in
# CI) runs 50 + 50 iterations, enough to check the cell, not to read the maps. The committed output
# of this notebook was made with `"full"`.


# %% tags=["parameters"]
TSNE = os.environ.get("COLLAPSE_KIT_TSNE", "fast" if PRESET == "tiny" else "full")
print(f"TSNE = {TSNE!r}")


# %%
from collapse_kit.figures import tsne_figure
from collapse_kit.metrics import gaussian_table
from collapse_kit.tsne import TSNESettings, tsne_map

tsne_settings = (TSNESettings() if TSNE == "full"
                 else TSNESettings(early_exaggeration_iter=50, n_iter=50))
panels = {name: E for name, E in tables.items() if "stage 2" not in name}
panels["Gaussian"] = gaussian_table(*next(iter(tables.values())).shape, random_state=0)
maps = [tsne_map(E, tsne_settings) for E in panels.values()]
tsne_figure(maps, list(panels), shared_scale=True, reference="Gaussian", panel_size=2.3,
            title=f"t-SNE of the item tables ({DATASET}, seed 0; {TSNE} settings)")


# %% [markdown]
# ## Try it: probe a table trained live
#
# A tiny SASRec+ (2 epochs, hidden 16 with the tiny preset) against the Gaussian and popularity
# floors on the same splits. After two epochs it has learned little, and the probe says so.


# %% include="live_setup"


# %%
from adrec.data import load_dataset

ds = load_dataset(DATASET)
live = train_model("sasrec", ds, cfg, work / "sasrec", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
E_live = load_embeddings(live.checkpoint).table
res = probe_with_baselines(E_live, labels.Y, settings=settings, popularity=popularity)
live_columns = [("live SASRec+", res["model"]), ("Gaussian table", res["gaussian"]),
                ("popularity only", res["popularity"])]
display(Markdown(Table(*result_rows(live_columns), align="lrrr").render()))
