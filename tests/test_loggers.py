"""`collapse-kit train --logger tensorboard|wandb|none`: what reaches each backend, read back."""
import json
import sys

import numpy as np
import pytest

from collapse_kit.cli import main
from collapse_kit.loggers import scalars, wandb_mode

TINY_TRAIN = ["--epochs", "2", "--set", "batch_size=256", "--set", "eval_every=1",
              "--set", "hidden=16", "--set", "n_heads=2", "--no-progress"]


def test_scalars_of_a_record_known_answer():
    record = {"stage": "stage3", "epoch": 4, "lr": 0.001, "seconds": 1.5, "loss": 2.0, "ce": 1.5,
              "mse": 0.5, "valid": {"HR@20": 20.0, "NDCG@20": 8.0}, "eval_seconds": 0.25,
              "collapse": {"sv_entropy": 4.5, "effective_rank": 90.0}, "flag": True}
    assert scalars(record) == {
        "stage3/lr": 0.001, "stage3/seconds": 1.5, "stage3/loss": 2.0, "stage3/ce": 1.5,
        "stage3/mse": 0.5, "stage3/valid/HR@20": 20.0, "stage3/valid/NDCG@20": 8.0,
        "stage3/eval_seconds": 0.25, "stage3/collapse/sv_entropy": 4.5,
        "stage3/collapse/effective_rank": 90.0}


def _log_records(run):
    return [json.loads(x) for x in (run / "stage1.log.jsonl").read_text().splitlines()]


def test_tensorboard_event_file_holds_the_logged_scalars_and_the_projector(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "--model", "stage1", "--dataset", "ml-100k", "--out", str(run),
                 "--logger", "tensorboard", "--json", *TINY_TRAIN]) == 0
    test = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test"]
    records = _log_records(run)
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"stage1/loss", "stage1/valid/NDCG@20", "stage1/collapse/sv_entropy",
            "test/NDCG@20"} <= tags
    # the series equal the JSON-lines log, epoch by epoch (float32 in the event file)
    for tag, pick in [("stage1/loss", lambda r: r["loss"]),
                      ("stage1/valid/NDCG@20", lambda r: r["valid"]["NDCG@20"]),
                      ("stage1/collapse/effective_rank", lambda r: r["collapse"]["effective_rank"])]:
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [r["epoch"] for r in records] == [1, 2]
        assert [v for _, v in got] == pytest.approx([pick(r) for r in records], rel=1e-6)
    assert events.Scalars("test/NDCG@20")[0].value == pytest.approx(test["NDCG@20"], rel=1e-6)
    # the final item table in the projector: its vectors and one metadata row per item
    import re

    config = (run / "tensorboard" / "projector_config.pbtxt").read_text()
    paths = dict(re.findall(r'(tensor_path|metadata_path): "([^"]+)"', config))
    assert 'tensor_name: "items' in config
    vectors = np.loadtxt(run / "tensorboard" / paths["tensor_path"], delimiter="\t")
    assert vectors.shape == (1008, 16)  # ML-100K's items, hidden=16; padding row dropped
    meta = (run / "tensorboard" / paths["metadata_path"]).read_text().splitlines()
    assert meta[0].split("\t") == ["item_id", "popularity", "genres"]
    assert len(meta) == 1 + 1008 and meta[1].split("\t")[0] == "1"


def test_wandb_offline_run_records_the_logged_series(tmp_path, capsys, monkeypatch):
    """Offline mode writes the run's records to OUT/wandb/offline-run-*/run-*.wandb (protobuf
    records: each history row holds its keys and JSON values as text); the series, the final
    test metrics and the config are found in it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["train", "--model", "stage1", "--dataset", "ml-100k", "--out", str(run),
                 "--logger", "wandb", "--json", *TINY_TRAIN]) == 0
    capsys.readouterr()
    runs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    data = runs[0].read_bytes()
    last = _log_records(run)[-1]
    for key in ("stage1/loss", "stage1/valid/NDCG@20", "stage1/collapse/sv_entropy",
                "stage1/epoch", "test/NDCG@20", "batch_size"):
        assert key.encode() in data, key
    assert json.dumps(last["loss"]).encode() in data  # the value as logged, not rounded


def test_wandb_is_offline_unless_configured(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


@pytest.mark.parametrize("kind,module", [("tensorboard", "torch.utils.tensorboard"),
                                         ("wandb", "wandb")])
def test_missing_backend_is_one_error_naming_the_extra_before_training(
        tmp_path, capsys, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    run = tmp_path / "run"
    assert main(["train", "--model", "stage1", "--dataset", "ml-100k", "--out", str(run),
                 "--logger", kind, *TINY_TRAIN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"pip install 'collapse-kit[{kind}]'" in err[0]
    assert not run.exists()  # nothing trained, nothing written


def test_unknown_logger_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model", "stage1", "--dataset", "ml-100k", "--logger", "mlflow"])
    assert exc.value.code == 2
    assert "invalid choice: 'mlflow'" in capsys.readouterr().err
