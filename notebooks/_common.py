"""Cells shared by every notebook: notebooks/_build.py puts a cell here where a notebook's
cell says include="NAME"."""


# %% name="parameters" tags=["parameters"]
# Parameters (environment variables override them; CI sets both).
import os
from pathlib import Path

# The real ML-100K runs (shuffled batches, trained on a 2-core CPU); relative to this folder.
RUNS = Path(os.environ.get("COLLAPSE_KIT_RUNS", "../results/ml-100k-cpu-shuffled/runs/ml-100k")).resolve()
# Preset of the one cell that trains live: "tiny" (2 epochs, hidden 16: seconds), "quick", "paper".
PRESET = os.environ.get("COLLAPSE_KIT_PRESET", "tiny")
assert RUNS.is_dir(), f"no runs at {RUNS}: set COLLAPSE_KIT_RUNS to a runs/<dataset> folder"
print(f"RUNS = {os.path.relpath(RUNS)}\nPRESET = {PRESET!r}")


# %% name="setup"
# %matplotlib inline
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
    return pd.json_normalize([json.loads(line) for line in lines if line.strip()])


def plot_stage(log, best, losses, loss_title, valid_title):
    """A stage's training losses (left) and validation HR/NDCG@20 (right), the selected epoch
    dotted."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    log.plot(x="epoch", y=losses, ax=a, legend=isinstance(losses, list), title=loss_title)
    ev = log.dropna(subset=["valid.NDCG@20"])
    ev.plot(x="epoch", y=["valid.HR@20", "valid.NDCG@20"], ax=b, marker=".", title=valid_title)
    for ax in (a, b):
        ax.axvline(best, color="k", ls=":", lw=1)
    show(fig)


# %% name="live_setup"
from adrec.config import TrainConfig
from adrec.pipeline import train_model
from adrec.config import PRESETS
from collapse_kit.monitor import CollapseMonitor

cfg = TrainConfig(**PRESETS[PRESET])
# A small model only for the tiny preset (CI); the other presets train the paper's size (hidden 128).
model_args = {"hidden": 16} if PRESET == "tiny" else {}
work = Path(tempfile.mkdtemp(prefix="collapse-kit-notebook-"))
print(f"preset {PRESET!r}: at most {cfg.epochs} epochs per stage, evaluation every "
      f"{cfg.eval_every}, model args {model_args or 'paper defaults'}")
