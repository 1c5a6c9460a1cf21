"""02_warmup.ipynb: the cells of the notebook in jupytext's percent format (build it with
python notebooks/_build.py --execute)."""


# %% [markdown]
# # 02 · Stage 2: the warm-up with a frozen item table
#
#
# Stage 2 starts the ADRec model proper: the pre-trained table E from stage 1 is copied in, and
# the parts that are new — the causal attention module (CAM), the auto-regressive diffusion module
# (ADM, the denoiser) and the timestep MLP — train for a few epochs (`warmup_epochs = 5`) with the
# full loss, CE + MSE (the denoiser's reconstruction error of the noised target embeddings), while
# **E is frozen**: no gradient, not in the optimizer, no weight decay.
#
# Why: freshly initialised diffusion modules produce large, noisy gradients. Let through to E, they
# would push the pre-trained table back towards noise before the denoiser has learned anything.
# The warm-up lets the new parts catch up first.
#
# This notebook shows the real run's warm-up (losses falling while E does not move), proves that the
# table really is unchanged (stage-1 and stage-2 tables are equal), looks at what skipping the
# warm-up cost in the real ablation, and runs a tiny three-stage ADRec live.


# %% include="parameters"


# %% include="setup"


# %% [markdown]
# ## The warm-up of the real run
#
# Five epochs; CE and MSE fall although E is fixed. The one evaluation (after the last epoch) scores
# the warmed-up model, which has not been selected on validation (`select=False`).


# %%
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
    "trains the whole model."))


# %% [markdown]
# ## Proof: the warm-up does not touch E
#
# The light checkpoints keep the item tables, so the stage-1 and stage-2 tables can be compared
# directly: they are equal, bit for bit. The collapse monitor's record at the end of stage 2 agrees
# with the statistics of the stage-1 table.


# %%
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
              .rename(lambda k: k.split(".", 1)[1])}).drop("seconds")


# %% [markdown]
# ## What the warm-up is worth: the ablation
#
# The real reproduction also trained ADRec without the warm-up (stage 3 directly after stage 1,
# same seed, same stage-1 checkpoint; the paper's Table 4 "w/o warm-up"). One seed each, so
# differences below about one point of HR@20 are within seed noise.


# %%
from collapse_kit.study.paper import PAPER_TABLE4

rows = {}
for label, variant in [("ADRec", ""), ("w/o warm-up", "w/o warm-up")]:
    m = run_metrics(RunSpec(DATASET, "adrec", 0, variant=variant), OUT)
    paper = PAPER_TABLE4[DATASET].get(label, (np.nan, np.nan))
    rows[label] = {"test HR@20": m["strict"]["test"]["HR@20"],
                   "test NDCG@20": m["strict"]["test"]["NDCG@20"],
                   "stage-3 epochs": m["stages"]["stage3"]["epochs"],
                   "paper HR@20": paper[0], "paper NDCG@20": paper[1]}
pd.DataFrame(rows).T.astype({"stage-3 epochs": int})


# %% [markdown]
# ## Try it: three stages, live
#
# `train_model("adrec", ...)` runs stage 1, the warm-up and stage 3 into one folder
# (`stage1.pt`, `stage2.pt`, `stage3.pt`, `best.pt`, a log per stage). The same check as above on
# the live run: E is identical before and after the warm-up, and moves in stage 3.


# %% include="live_setup"


# %%
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
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})
