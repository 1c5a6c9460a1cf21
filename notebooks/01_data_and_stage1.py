"""01_data_and_stage1.ipynb: the cells of the notebook in jupytext's percent format (build it with
python notebooks/_build.py --execute)."""


# %% [markdown]
# # 01 · The data and stage 1: pre-training the item table
#
#
# ADRec (Auto-regressive Diffusion Recommender) trains in three stages; this notebook is the first.
#
# 1. **Stage 1, pre-training** (this notebook): a SASRec-style causal Transformer *without* position
#    embeddings learns the item table **E** (one 128-d row per item) with cross-entropy over all
#    items, until early stopping on valid NDCG@20.
# 2. Stage 2, warm-up (`02_warmup.ipynb`): E is frozen, the diffusion parts learn.
# 3. Stage 3, full fine-tuning (`03_full_finetuning.ipynb`): everything trains.
#
# The paper's point is that diffusion recommenders trained end to end leave E close to random noise
# ("embedding collapse", `04_baselines_and_collapse.ipynb`); pre-training E first is ADRec's remedy.
# Here: the ML-100K data (the paper's Table 7), the real stage-1 run (shuffled batches, trained on
# a 2-core CPU: `results/ml-100k-cpu-shuffled`), the table it produced compared with a same-shape Gaussian table, and a
# tiny stage-1 run trained live. Every number printed below is read from the committed run files.


# %% include="parameters"


# %% include="setup"


# %% [markdown]
# ## The data: ML-100K, leave-one-out
#
# Users with at least 5 interactions (ratings above the threshold), items in time order. Each user's
# last item is the test target, the one before it the validation target; the rest is training
# history. The model sees at most the last `max_len = 50` items.


# %%
from adrec.data import load_dataset

ds = load_dataset(DATASET)
pd.DataFrame([ds.stats()])   # the paper's Table 7


# %%
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
      "the model sees their last 50.")


# %% [markdown]
# ## Stage 1 of the real run
#
# The stage-1 log (`stage1.log.jsonl`) has one line per epoch: the training loss (here CE only) and,
# every 5th epoch, the validation metrics and the collapse monitor's statistics of E. Training stops
# after 4 evaluations without a better valid NDCG@20; the checkpoint `stage1.pt` holds the best
# epoch.


# %%
from collapse_kit.study.runs import RunSpec, run_metrics

log1 = read_log(RUN / "stage1.log.jsonl")
m1 = run_metrics(RunSpec(DATASET, "adrec", 0), OUT, stage="stage1")
best1 = m1["best_epoch"]
plot_stage(log1, best1, "ce", "stage 1: training cross-entropy", "stage 1: validation (%)")
t = m1["strict"]["test"]
display(Markdown(
    f"Stage 1 ran **{len(log1)} epochs** ({m1['train_seconds']:.1f} s of training on "
    f"{m1['trained_on']}); the best valid NDCG@20 was at epoch **{best1}** (dotted line). "
    f"On its own, the stage-1 model scores test HR@20 = **{t['HR@20']:.2f}%** and "
    f"NDCG@20 = **{t['NDCG@20']:.2f}%** (strict protocol)."))


# %% [markdown]
# The collapse monitor (`collapse_kit.monitor`) recorded four cheap statistics of E at every
# evaluation: singular-value entropy and top singular value of the column-standardised table,
# effective rank, mean row norm. E starts as small Gaussian noise (std 0.1), i.e. isotropic: maximal
# entropy and effective rank. Learning concentrates variance in a few directions.


# %%
from collapse_kit.monitor import plot_trajectories, read_trajectory

traj1 = read_trajectory(RUN, stages=["stage1"])
show(plot_trajectories({"ADRec stage 1": traj1}))
first, last = traj1[0], traj1[-1]
print(f"effective rank {first['effective_rank']:.2f} (epoch {first['epoch']}) -> "
      f"{last['effective_rank']:.2f} (epoch {last['epoch']}); top singular value "
      f"{first['top_singular_value']:.1f} -> {last['top_singular_value']:.1f}")


# %% [markdown]
# ## The pre-trained table against a Gaussian
#
# `collapse_kit.analyze.analyze` computes every collapse metric of a table (the paper's Table 5
# metrics, corrected ones and more), each next to its value on a same-shape N(0, 1) table: the
# "nothing learned" reference. A learned table is *less* isotropic than noise: larger leading
# singular values, lower entropy and effective rank, a larger KL to a Gaussian.


# %%
from collapse_kit.analyze import analyze, format_analysis
from collapse_kit.io import load_embeddings

E1 = load_embeddings(RUN / "stage1.pt").table
print(f"stage-1 item table: {E1.shape[0]} items x {E1.shape[1]} dimensions")
res1 = analyze(E1, seed=0)
display(Markdown(format_analysis(res1, "markdown")))


# %%
from collapse_kit.figures import spectrum_figure, table_spectrum
from collapse_kit.metrics import gaussian_table

G = gaussian_table(*E1.shape, random_state=0)
spectrum_figure({"ADRec stage 1": table_spectrum(E1), "Gaussian": table_spectrum(G)},
                reference="Gaussian", title=f"Singular-value spectra ({DATASET})")


# %% [markdown]
# ## Try it: a stage-1 run, live
#
# The same API the runs above came from: `adrec.pipeline.train_model("stage1", ...)` with a
# `TrainConfig` from a preset and the collapse monitor as a callback. With the `tiny` preset (the
# default here, and CI's) it trains 2 epochs of a hidden-16 model, so its numbers only show that the
# machinery works; `COLLAPSE_KIT_PRESET=quick` or `paper` trains the real thing (minutes on a CPU).


# %% include="live_setup"


# %%
from collapse_kit.monitor import collapse_stats

live = train_model("stage1", ds, cfg, work / "stage1", model_args=model_args, progress=False,
                   callbacks=[CollapseMonitor()])
live_log = read_log(work / "stage1" / "stage1.log.jsonl")
display(live_log[["epoch", "ce", "valid.HR@20", "valid.NDCG@20", "collapse.effective_rank"]])
print("checkpoint:", live.checkpoint.name, "| test (strict, %):",
      {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})
print("collapse statistics of the live table:",
      {k: round(v, 3) for k, v in collapse_stats(load_embeddings(live.checkpoint).table).items()})
