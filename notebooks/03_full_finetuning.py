"""03_full_finetuning.ipynb: the cells of the notebook in jupytext's percent format (build it with
python notebooks/_build.py --execute)."""


# %% [markdown]
# # 03 · Stage 3: full fine-tuning
#
#
# Stage 3 unfreezes everything: E, CAM, the denoiser and the timestep MLP train together on
# CE + MSE until early stopping on valid NDCG@20 (strict protocol: one selection metric, metrics
# over all users). The selected epoch becomes `stage3.pt` and the run's product `best.pt`.
#
# At inference ADRec noises only the last position and denoises it step by step, with the history
# clean; the score of an item is the final prediction's dot product with its row of E.
#
# This notebook shows the real run's stage 3 (losses and validation), the collapse statistics across
# all three stages, how the table's spectrum and collapse metrics move from stage 1 to stage 3, and
# ADRec's test metrics over three seeds; it then runs stage 3 live from a stage-1 checkpoint.


# %% include="parameters"


# %% include="setup"


# %% [markdown]
# ## Stage 3 of the real run


# %%
from collapse_kit.study.runs import RunSpec, run_metrics

spec = RunSpec(DATASET, "adrec", 0)
log3 = read_log(RUN / "stage3.log.jsonl")
m3 = run_metrics(spec, OUT, stage="stage3")
best3 = m3["best_epoch"]
plot_stage(log3, best3, ["ce", "mse"], "stage 3: training losses", "stage 3: validation (%)")
t = m3["strict"]["test"]
display(Markdown(
    f"Stage 3 ran **{len(log3)} epochs** ({m3['train_seconds']:.1f} s of training on "
    f"{m3['trained_on']}) and selected epoch **{best3}** (dotted line): test HR@20 = "
    f"**{t['HR@20']:.2f}%**, NDCG@20 = **{t['NDCG@20']:.2f}%**."))


# %% [markdown]
# ## The item table through the three stages
#
# The collapse monitor's trajectory over the whole run (dotted lines: stage boundaries; each stage
# starts from the previous stage's *selected* epoch, so a curve can step back there). Flat in the
# warm-up (E frozen), moving again in stage 3.


# %%
from collapse_kit.monitor import plot_trajectories, read_trajectory

show(plot_trajectories({"ADRec (seed 0)": read_trajectory(RUN)}))


# %% [markdown]
# Stage 3 does not undo the pre-training: the table moves further *away* from the Gaussian
# reference (steeper spectrum, larger leading singular values, lower effective rank). This is the
# opposite of collapse towards noise; note that "less isotropic" is not by itself "better" —
# `05_probes_and_tsne.ipynb` checks what the tables encode.


# %%
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
                reference="Gaussian", title=f"Singular-value spectra ({DATASET}, seed 0)")


# %%
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
             title="Item-table metrics and test accuracy per stage (dashed: Gaussian table)")


# %% [markdown]
# ## ADRec's test metrics over seeds
#
# `best.pt` of each seed stores the test metrics of its selected epoch under both protocols
# (strict: selection on valid NDCG@20, metrics over all users; official: the released code's
# selection and batch-averaged metrics). Mean ± sd over the seeds found in `RUNS`, next to the paper.


# %%
from collapse_kit.study.report import accuracy_tables
from collapse_kit.study.runs import find_runs

adrec_runs = [r for r in find_runs(OUT, DATASET) if r.spec.model == "adrec" and not r.spec.variant]
for _, table in accuracy_tables(adrec_runs, stamp={}):
    display(Markdown(table.render("markdown")))


# %% [markdown]
# ## Try it: stage 3 from a stage-1 checkpoint, live
#
# The ablations reuse the main run's stage 1: `train_model("adrec", ..., stage1=CKPT)` skips
# pre-training and starts the warm-up and stage 3 from that table (ours or the authors'
# `pretrain.pth`). Here a tiny stage 1 is trained first, then ADRec from it. (The committed light
# checkpoints have no model weights, so the real stage-1 table cannot seed a live run.)


# %% include="live_setup"


# %%
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
print("test (strict, %):", {k: round(v, 2) for k, v in live.metrics["strict"]["test"].items()})
