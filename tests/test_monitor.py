"""The collapse monitor: known answers, integration with the trainer log, trajectory figure."""
import json

import numpy as np
import pytest
import torch

from adrec.config import TrainConfig
from adrec.models import build_model
from adrec.train import train_stage
from collapse_kit.monitor import (CollapseMonitor, collapse_stats, plot_trajectories,
                                  read_trajectory)
from tests.conftest import make_dataset


def test_known_answers():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4000, 16))
    s = collapse_stats(g)
    assert s["effective_rank"] > 15.5          # isotropic: close to d = 16
    assert s["sv_entropy"] == pytest.approx(np.log(16), abs=0.01)
    assert s["mean_row_norm"] == pytest.approx(4.0, rel=0.02)  # E||x|| ~ sqrt(16)
    rank1 = np.outer(rng.standard_normal(500), rng.standard_normal(16))
    assert collapse_stats(rank1)["effective_rank"] == pytest.approx(1.0, abs=1e-6)


def _stage(tmp_path, name, epochs):
    ds = make_dataset()
    torch.manual_seed(0)
    m = build_model("stage1", ds.n_items, {"max_len": 10, "hidden": 16, "n_heads": 2})
    cfg = TrainConfig(epochs=epochs, batch_size=16, eval_every=2, max_len=10, device="cpu")
    return train_stage(m, ds, cfg, tmp_path, stage=name, progress=False,
                       callbacks=[CollapseMonitor()])


def test_records_land_in_the_log_at_each_evaluation(tmp_path):
    _stage(tmp_path, "stage1", 4)
    rows = [json.loads(x) for x in (tmp_path / "stage1.log.jsonl").read_text().splitlines()]
    with_stats = [r["epoch"] for r in rows if "collapse" in r]
    assert with_stats == [r["epoch"] for r in rows if "valid" in r] == [2, 4]
    assert set(rows[1]["collapse"]) == {"sv_entropy", "effective_rank", "top_singular_value",
                                        "mean_row_norm", "seconds"}


def test_trajectory_concatenates_stages_and_plots(tmp_path):
    _stage(tmp_path, "stage1", 4)
    _stage(tmp_path, "stage3", 2)
    traj = read_trajectory(tmp_path)
    assert [(r["stage"], r["step"]) for r in traj] == [("stage1", 2), ("stage1", 4),
                                                       ("stage3", 6)]
    fig = plot_trajectories({"run": traj})
    assert len(fig.axes) == 4
    assert not list(tmp_path.glob("*.png"))  # figure functions write nothing
    with pytest.raises(FileNotFoundError):
        read_trajectory(tmp_path, ["stage2"])


def test_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    """Regression: plot_trajectories called matplotlib.use("Agg"), which broke inline display
    in Jupyter for the rest of the session."""
    import matplotlib

    before = matplotlib.get_backend()
    fig = plot_trajectories({"run": [{"stage": "s", "epoch": 1, "step": 1, "sv_entropy": 1.0,
                                      "effective_rank": 2.0, "top_singular_value": 3.0,
                                      "mean_row_norm": 1.0}]})
    assert matplotlib.get_backend() == before
    assert len(fig.axes) == 4
