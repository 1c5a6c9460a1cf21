"""`collapse-kit train / evaluate / data stats`: outputs and one-line errors for bad input."""
import json
import subprocess
import sys

import pytest
import torch

from collapse_kit.cli import main

TINY_TRAIN = ["--epochs", "2", "--set", "batch_size=256", "--set", "eval_every=1",
              "--set", "hidden=16", "--set", "n_heads=2", "--no-progress"]


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("collapse-kit: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_train_json_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "stage1", "--dataset", "ml-100k", "--out", str(out),
                 "--json", *TINY_TRAIN]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"valid", "test", "checkpoint"}
    assert set(line["test"]) == {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"}
    assert main(["evaluate", line["checkpoint"], "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {m: again["test"][m] for m in line["test"]} == pytest.approx(line["test"])
    assert {"coverage@20", "avg_popularity@20", "head_share@20"} <= set(again["test"])
    cfg = torch.load(line["checkpoint"], weights_only=True)["config"]
    assert cfg["epochs"] == 2 and cfg["batch_size"] == 256


def test_data_stats_json(capsys):
    assert main(["data", "stats", "beauty", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dataset": "beauty", "users": 10553, "items": 6086, "interactions": 94148,
        "avg_length": 8.92}


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "sasrec", "--dataset", "nope"], "unknown dataset"),
    (["train", "--model", "bert4rec", "--dataset", "ml-100k"], "unknown model"),
    (["train", "--model", "sasrec", "--dataset", "ml-100k", "--set", "color=red"],
     "unknown --set key"),
    (["train", "--model", "sasrec", "--dataset", "ml-100k", "--set", "lr=fast"],
     "expected a number"),
    (["train", "--model", "sasrec", "--dataset", "ml-100k", "--set", "lr"], "key=value"),
    (["train", "--model", "sasrec", "--dataset", "ml-100k", "--set", "protocol=loose"],
     "choose one of"),
    (["train", "--model", "sasrec", "--dataset", "ml-100k", "--epochs", "0"], "--epochs"),
    (["evaluate", "/no/such/file.pt"], "No such checkpoint file"),
    (["data", "stats", "nope"], "unknown dataset"),
])
def test_bad_input_one_line(capsys, argv, needle):
    assert main(argv) == 2
    assert needle in _err(capsys)


def test_bad_checkpoint_files(tmp_path, capsys, official_ckpt):
    trunc = tmp_path / "t.pt"
    trunc.write_bytes(official_ckpt.read_bytes()[:5000])
    assert main(["evaluate", str(trunc)]) == 2
    assert "corrupt or truncated" in _err(capsys)
    assert main(["evaluate", str(official_ckpt)]) == 2
    assert "--model stage1" in _err(capsys)
    assert main(["evaluate", str(official_ckpt), "--model", "stage1", "--dataset", "beauty"]) == 2
    assert "items" in _err(capsys)
    torch.save({"x": torch.zeros(3)}, tmp_path / "f.pt")
    assert main(["evaluate", str(tmp_path / "f.pt")]) == 2
    assert "neither" in _err(capsys)


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "collapse_kit.cli", "evaluate",
                        str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("collapse-kit: error:")
    r = subprocess.run([sys.executable, "-m", "collapse_kit.cli", "--debug", "evaluate",
                        str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_train_refuses_to_overwrite_and_resumes(tmp_path, capsys):
    args = ["train", "--model", "stage1", "--dataset", "ml-100k", "--out", str(tmp_path),
            "--json", *TINY_TRAIN]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 2
    assert "--resume" in _err(capsys)
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == \
        json.loads(first.splitlines()[-1])


def test_missing_optional_package_only_disables_its_commands(monkeypatch, capsys):
    """Regression: a command module needing an absent package must not break `train`."""
    import builtins
    import importlib
    import sys

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "openTSNE" or name.startswith("openTSNE."):
            raise ModuleNotFoundError("No module named 'openTSNE'", name="openTSNE")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for mod in [m for m in sys.modules if m.startswith(("collapse_kit.commands.figures",
                                                        "collapse_kit.tsne", "openTSNE"))]:
        monkeypatch.delitem(sys.modules, mod)
    importlib.invalidate_caches()
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    capsys.readouterr()
    from collapse_kit.cli import build_parser
    if "tsne" in build_parser()._subparsers._group_actions[0].choices:
        assert main(["tsne", "x.pt", "-o", "y"]) == 2
        _err(capsys)  # one clear line, whichever way the command fails


def test_train_command_retains_freed_memory_once_before_training(tmp_path, monkeypatch, capsys):
    """`collapse-kit train` (what reproduce's subprocesses run) sets the allocator policy itself,
    once, before the first stage trains; the library no longer does."""
    import adrec.pipeline
    import adrec.train

    calls = []

    class Done:
        def summary(self, protocol):
            metrics = {"HR@5": 0.0, "HR@10": 0.0, "HR@20": 0.0, "NDCG@5": 0.0, "NDCG@10": 0.0,
                       "NDCG@20": 0.0}
            return {"valid": metrics, "test": metrics, "checkpoint": "x.pt"}

    def fake_train_model(*args, **kwargs):
        calls.append("train")
        return Done()

    monkeypatch.setattr(adrec.train, "retain_freed_memory", lambda: calls.append("retain"))
    monkeypatch.setattr(adrec.pipeline, "train_model", fake_train_model)
    assert main(["train", "--model", "sasrec", "--dataset", "ml-100k", "--out",
                 str(tmp_path / "run"), "--json", *TINY_TRAIN]) == 0
    assert calls == ["retain", "train"]
