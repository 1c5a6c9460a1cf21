"""Data-parallel training: 2 CPU processes under torchrun match one process (same global batch)."""
import json
import subprocess
import sys

import pytest
import torch

from tests.test_reproduce import _tiny_file

ARGS = ["train", "--model", "stage1", "--epochs", "3", "--seed", "3", "--json", "--no-progress",
        "--no-monitor", "--set", "dropout=0", "--set", "emb_dropout=0", "--set", "hidden=16",
        "--set", "n_heads=2", "--set", "batch_size=32", "--set", "eval_every=1",
        # float32: the stated 1e-4 tolerance is for summation order, not bfloat16 rounding
        "--set", "matmul_precision=highest"]


def _run(cmd, tmp_path):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_two_process_ddp_matches_single_process(tmp_path):
    data = str(_tiny_file(tmp_path))
    single = _run([sys.executable, "-m", "collapse_kit.cli", *ARGS, "--dataset", data,
                   "--out", str(tmp_path / "one")], tmp_path)
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "collapse_kit.cli", *ARGS, "--dataset", data,
                "--out", str(tmp_path / "two")], tmp_path)
    a = torch.load(single["checkpoint"], weights_only=True)
    b = torch.load(ddp["checkpoint"], weights_only=True)
    # Stated tolerance: the two runs differ only in float summation order (gradients are
    # all-reduced; each rank's loss divides by the global batch's counts, times world size).
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, atol=1e-4, rtol=1e-4)
    for split in ("valid", "test"):
        for metric, value in single[split].items():
            assert ddp[split][metric] == pytest.approx(value, abs=0.5), (split, metric)
    assert b["epoch"] == a["epoch"]
    # the logged epoch losses are the global batch's (the ranks' shares summed), not rank 0's
    logs = [[json.loads(x)["loss"] for x in (tmp_path / d / "stage1.log.jsonl").read_text()
             .splitlines() if x] for d in ("one", "two")]
    assert logs[1] == pytest.approx(logs[0], rel=1e-4)
    assert a["metrics"]["world_size"] == 1 and b["metrics"]["world_size"] == 2


def test_shard_splits_rows_and_keeps_the_global_totals():
    from adrec.data import Batch
    from adrec.distributed import DistInfo, shard

    h = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 6], [7, 8, 9], [0, 2, 3]])
    t = torch.tensor([[0, 2, 3], [4, 5, 6], [0, 0, 7], [8, 9, 1], [0, 3, 4]])
    parts = [shard(Batch(h, t), DistInfo(r, 2, r)) for r in range(2)]
    assert parts[0][0].history.tolist() == [h[0].tolist(), h[2].tolist(), h[4].tolist()]
    assert parts[1][0].history.tolist() == [h[1].tolist(), h[3].tolist()]
    # each share divides by the global batch's 5 rows and 11 target tokens; DDP's average over
    # 2 ranks is undone by the weight 2
    assert [(p.n_rows, p.n_tokens, w) for p, w in parts] == [(5, 11, 2.0), (5, 11, 2.0)]
    # a share of a share (micro-batches of a rank's rows) keeps the global totals
    assert {(m.n_rows, m.n_tokens) for m in parts[0][0].split(2)} == {(5, 11)}
    assert shard(Batch(h[:1], t[:1]), DistInfo(1, 2, 1)) == (None, 0.0)
    one = Batch(h, t)
    assert shard(one, DistInfo()) == (one, 1.0)
