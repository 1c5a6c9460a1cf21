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


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    """A run folder holding the logs of stage1 (4 epochs) and stage3 (2 epochs), trained once."""
    run = tmp_path_factory.mktemp("trajectory")
    _stage(run, "stage1", 4)
    _stage(run, "stage3", 2)
    return run


def test_trajectory_concatenates_stages(two_stages):
    traj = read_trajectory(two_stages)
    assert [(r["stage"], r["step"]) for r in traj] == [("stage1", 2), ("stage1", 4),
                                                       ("stage3", 6)]


def test_trajectory_plot_has_four_panels_and_writes_nothing(two_stages):
    fig = plot_trajectories({"run": read_trajectory(two_stages)})
    assert len(fig.axes) == 4
    assert not list(two_stages.glob("*.png"))  # figure functions write nothing


def test_trajectory_of_a_stage_without_a_log_raises(two_stages):
    with pytest.raises(FileNotFoundError):
        read_trajectory(two_stages, ["stage2"])


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


# -- the monitor outside collapse-kit's trainer -------------------------------------------------

def test_plain_pytorch_loop_records_every_n_epochs():
    """The README's example: a model of one's own, a table given as a callable."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    opt = torch.optim.Adam(emb.parameters(), lr=0.05)
    monitor = CollapseMonitor(lambda: emb.weight, every=2)
    got = []
    for epoch in range(5):
        loss = emb.weight.mean(dim=0).pow(2).sum() - emb.weight.var(dim=0).sum() * 0  # pull rows together
        opt.zero_grad()
        loss.backward()
        opt.step()
        got.append(monitor.step(epoch))
    assert [g is not None for g in got] == [True, False, True, False, True]
    assert [r["epoch"] for r in monitor.history] == [0, 2, 4]
    last = monitor.history[-1]
    want = collapse_stats(emb.weight.detach().numpy())
    for key, value in want.items():
        assert last[key] == pytest.approx(value, rel=1e-12)
    assert emb.weight.grad is not None and not emb.weight.grad.isnan().any()  # autograd intact


def test_extras_run_on_the_table_and_knn_agreement_reads_labels():
    from collapse_kit.metrics import knn_label_agreement

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    separated = rng.normal(size=(4, 16))[labels] + 0.01 * rng.normal(size=(100, 16))
    monitor = CollapseMonitor(lambda: separated,
                              extras={"knn": lambda E: knn_label_agreement(E, labels, k=5)})
    assert monitor.step(0)["knn"] == 1.0


def test_knn_label_agreement_known_answers():
    from collapse_kit.errors import UndefinedMetric
    from collapse_kit.metrics import knn_label_agreement

    # on a line, each point's 2 nearest (cosine) neighbours: angles 0..9 degrees in two halves
    angles = np.radians(np.arange(10, dtype=float))
    E = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.array([0] * 5 + [1] * 5)
    # the two items at the boundary (4 and 5) have one neighbour of each class: 8 x 1 + 2 x 0.5
    assert knn_label_agreement(E, y, k=2) == pytest.approx(9 / 10)
    multi = np.zeros((10, 3), dtype=int)
    multi[:5, 0] = 1
    multi[5:, 1] = 1
    multi[4, 1] = 1  # item 4 is in both classes: its neighbours all agree, and item 5's do too
    assert knn_label_agreement(E, multi, k=2) == pytest.approx(1.0)
    y_unlabelled = y.copy()
    y_unlabelled[[4, 5]] = -1  # left out (not scored, not neighbours): a 3-degree gap now
    assert knn_label_agreement(E, y_unlabelled, k=2) == 1.0  # separates the halves
    y_unlabelled[[3, 6]] = -1  # 3 labelled items a side: with k = 3 each item's third
    assert knn_label_agreement(E, y_unlabelled, k=3) == pytest.approx(2 / 3)  # is across
    rng = np.random.default_rng(1)
    chance = knn_label_agreement(rng.normal(size=(3000, 16)), rng.integers(0, 4, 3000), k=10)
    assert chance == pytest.approx(0.25, abs=0.02)  # a random table: label frequencies only
    with pytest.raises(UndefinedMetric, match="k \\+ 1 = 11 labelled rows"):
        knn_label_agreement(E, y, k=10)
    E0 = E.copy()
    E0[3] = 0
    with pytest.raises(UndefinedMetric, match="all zeros"):
        knn_label_agreement(E0, y, k=2)


def test_monitor_refuses_bad_arguments():
    from collapse_kit.errors import UserError

    with pytest.raises(UserError, match="takes a callable"):
        CollapseMonitor(np.zeros((3, 2)))
    with pytest.raises(UserError, match="every must be a positive integer"):
        CollapseMonitor(lambda: None, every=0)
    with pytest.raises(UserError, match="has no table to read"):
        CollapseMonitor().step(0)


def test_lightning_adapter_without_lightning_is_one_clear_error(monkeypatch):
    import sys

    from collapse_kit.errors import UserError
    from collapse_kit.monitor import lightning_callback

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(UserError, match="pip install lightning"):
        lightning_callback(CollapseMonitor(lambda: np.eye(4)))


def test_lightning_adapter_in_a_real_lightning_trainer(tmp_path):
    """lightning is in the test extra: a real Trainer.fit over 3 epochs steps the monitor at the
    end of every training epoch (every=2: epochs 0 and 2) and logs through the module."""
    import lightning as L

    from collapse_kit.monitor import lightning_callback

    class Items(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.item_emb = torch.nn.Embedding(30, 8)

        def training_step(self, batch, batch_idx):
            (ids,) = batch
            return self.item_emb(ids).mean(0).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    model = Items()
    monitor = CollapseMonitor(lambda: model.item_emb.weight, every=2)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(30)),
                                       batch_size=10)
    trainer = L.Trainer(max_epochs=3, callbacks=[lightning_callback(monitor)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1,
                        default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert [r["epoch"] for r in monitor.history] == [0, 2]
    final = collapse_stats(model.item_emb.weight.detach().numpy())
    assert monitor.history[-1]["effective_rank"] == pytest.approx(final["effective_rank"])
    assert trainer.callback_metrics["collapse/effective_rank"].item() == pytest.approx(
        final["effective_rank"], rel=1e-6)  # logged as float32


def test_readme_monitor_example_runs_as_written():
    """The README's plain-loop example, executed from the README itself."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- monitor-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block, "README lost its monitor example block"
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    history = scope["monitor"].history
    assert [r["epoch"] for r in history] == [0, 2, 4]
    assert set(history[-1]) == {"epoch", "sv_entropy", "effective_rank", "top_singular_value",
                                "mean_row_norm", "knn", "seconds"}
    assert 0.0 <= history[-1]["knn"] <= 1.0
    assert scope["stats"] is None  # epoch 5 is between the every=2 steps


def test_the_genre_probe_extra_is_the_linear_probe_of_the_table_at_that_step():
    """probes.linear.probe_statistic: the monitor's ready-made probe extra returns exactly the
    probe's held-out micro F1 (one split); a table that encodes the genres reads them back, a
    random one does not."""
    from collapse_kit.errors import UserError
    from probes.labels import load_item_labels
    from probes.linear import ProbeSettings, linear_probe, probe_statistic

    genres = load_item_labels("ml-100k-genres", 1008)
    rng = np.random.default_rng(0)
    planted = torch.tensor(np.hstack([genres.Y * 3.0, rng.normal(size=(1008, 8))]),
                           dtype=torch.float32)
    table = {"E": planted}
    monitor = CollapseMonitor(lambda: table["E"], extras={"genre_f1": probe_statistic(genres)})
    high = monitor.step(0)["genre_f1"]
    want = linear_probe(planted.numpy().astype(np.float64), genres.Y,
                        settings=ProbeSettings(seeds=1)).mean["micro_f1"]
    assert high == pytest.approx(want, abs=1e-12) and high > 0.9
    table["E"] = torch.randn(1008, 34, generator=torch.Generator().manual_seed(1))
    low = monitor.step(1)["genre_f1"]
    assert low < high - 0.3
    assert [r["genre_f1"] for r in monitor.history] == [high, low]
    mean_ap = probe_statistic(genres.Y, metric="mean_average_precision")(planted.numpy())
    assert 0.9 < mean_ap <= 1.0
    with pytest.raises(UserError, match="unknown probe metric 'f1'"):
        probe_statistic(genres, metric="f1")
