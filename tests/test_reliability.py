"""Reliability regressions (issue "Reliability"): no wrong number reported as success, one clear
line for every bad input, run folders that cannot be corrupted.

Each test builds its fixture here (a few bytes, tmp_path); the analyzers' degenerate-table and
loader cases live beside their modules (test_io.py, test_analyze_cli.py, ...).
"""
from __future__ import annotations

import gzip
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adrec.checkpoint import atomic_save, load_checkpoint, safe_load
from adrec.config import TrainConfig, parse_overrides, validate
from adrec.evaluate import evaluate, target_ranks
from adrec.models import build_model
from adrec.models.sasrec import SASRecArgs
from adrec.train import (SettingsMismatch, TrainingDiverged, folder_lock, read_log,
                         train_stage)
from collapse_kit.cli import main
from tests.conftest import make_dataset

SMALL = {"max_len": 10, "hidden": 16, "n_heads": 2}
CFG = dict(epochs=4, batch_size=16, eval_every=2, patience=2, max_len=10, seed=3, device="cpu")
TINY_SETS = ["--set", "batch_size=64", "--set", "eval_every=1", "--set", "hidden=16",
             "--set", "n_heads=2", "--no-progress", "--no-monitor"]


def _one_line(capsys, prefix="collapse-kit: error: "):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix), err
    assert "Traceback" not in err[0]
    return err[0]


def _write_sequences(path: Path, ds=None) -> Path:
    ds = ds or make_dataset(n_users=60)
    lines = ["user\ttrain\tvalid\ttest"]
    lines += [f"{u + 1}\t{' '.join(map(str, s))}\t{v}\t{t}"
              for u, (s, v, t) in enumerate(zip(ds.train, ds.valid, ds.test))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def seqfile(tmp_path):
    return _write_sequences(tmp_path / "tiny.tsv")


@pytest.fixture
def trained(tmp_path, seqfile, capsys):
    """The checkpoint of a 1-epoch SASRec+ run on the tiny sequences file."""
    out = tmp_path / "run"
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                 "--out", str(out), *TINY_SETS]) == 0
    capsys.readouterr()
    return out / "sasrec.pt"


def _train(tmp_path, name="run", resume=False, callbacks=(), seed=3, **kw):
    ds = make_dataset()
    torch.manual_seed(seed)
    model = build_model("sasrec", ds.n_items, SMALL)
    cfg = TrainConfig(**{**CFG, "seed": seed, **kw})
    return train_stage(model, ds, cfg, tmp_path / name, stage="sasrec", resume=resume,
                       progress=False, callbacks=callbacks)


class _StopAt:
    """A callback that interrupts training at an evaluation (as a kill would)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_evaluate(self, *, model, stage, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


# 1. NaN scores must not count as hits ---------------------------------------------------------

def test_nan_scores_are_an_error_not_hits():
    scores = torch.tensor([[0.0, 1.0, float("nan"), 0.5], [0.0, 0.2, 0.1, 0.3]])
    with pytest.raises(ValueError, match="NaN or infinity for 1 of 2 users"):
        target_ranks(scores, torch.tensor([1, 3]), exclude_padding=True)
    # the padding row does not compete under the strict protocol: its score is not checked
    pad = torch.tensor([[float("-inf"), 1.0, 0.5]])
    assert target_ranks(pad, torch.tensor([1]), exclude_padding=True).tolist() == [1]
    with pytest.raises(ValueError):
        target_ranks(pad, torch.tensor([1]), exclude_padding=False)


def test_one_nan_item_row_makes_evaluation_fail():
    ds = make_dataset()
    model = build_model("sasrec", ds.n_items, SMALL)
    evaluate(model, ds, "test", max_len=10)  # finite: fine
    with torch.no_grad():
        model.item_embedding.weight[5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate(model, ds, "test", max_len=10)


def test_evaluate_refuses_a_checkpoint_with_nan_weights(tmp_path, seqfile, trained, capsys):
    ck = safe_load(trained)
    ck["state_dict"] = {k: v * float("nan") if v.is_floating_point() else v
                        for k, v in ck["state_dict"].items()}
    torch.save(ck, tmp_path / "nan.pt")
    assert main(["evaluate", str(tmp_path / "nan.pt"), "--dataset", str(seqfile)]) == 2
    assert "NaN or infinity" in _one_line(capsys)


# 2. non-finite settings, diverging training -------------------------------------------------

@pytest.mark.parametrize("pair", ["lr=nan", "lr=inf", "lam=nan", "guidance_scale=nan",
                                  "resume_seconds=nan", "lr=-inf"])
def test_non_finite_set_values_are_refused(pair):
    from adrec.models.adrec import ADRecArgs
    from adrec.models.dreamrec import DreamRecArgs

    with pytest.raises(ValueError, match="finite"):
        parse_overrides([pair], TrainConfig, ADRecArgs, DreamRecArgs)


def test_non_finite_config_fields_are_refused_programmatically():
    with pytest.raises(ValueError, match="finite"):
        validate(TrainConfig(lr=math.nan))
    with pytest.raises(ValueError, match="finite"):
        validate(TrainConfig(resume_seconds=math.inf))
    with pytest.raises(ValueError, match="finite"):
        build_model("dreamrec", 10, {"guidance_scale": math.nan})


def test_diverged_training_stops_with_a_clear_line_and_writes_no_checkpoint(tmp_path,
                                                                            monkeypatch):
    from adrec.models.sasrec import SASRec

    real = SASRec.loss

    def nan_loss(self, batch):
        out = real(self, batch)
        return {k: v * float("nan") for k, v in out.items()}

    monkeypatch.setattr(SASRec, "loss", nan_loss)
    with pytest.raises(TrainingDiverged, match=r"sasrec, epoch 1: .*loss = nan"):
        _train(tmp_path)
    assert not (tmp_path / "run" / "sasrec.pt").exists()


def test_cli_divergence_is_one_line(tmp_path, seqfile, capsys):
    # lr = 1e30 blows the weights up within the first epoch
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "2",
                 "--out", str(tmp_path / "r"), "--set", "lr=1e30", *TINY_SETS]) == 2
    line = _one_line(capsys)
    assert "diverged" in line or "NaN or infinity" in line
    assert not (tmp_path / "r" / "sasrec.pt").exists()


# 3. resume with other settings is refused ----------------------------------------------------

def test_resume_with_other_settings_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, callbacks=[_StopAt(2)], resume_seconds=0.0)
    assert (tmp_path / "run" / "sasrec.resume.pt").exists()
    with pytest.raises(SettingsMismatch, match=r"lr: 0.001 -> 0.01; seed: 3 -> 5"):
        _train(tmp_path, resume=True, seed=5, lr=0.01)
    # the exempt key (how often the state is written) may change; the run then finishes
    done = _train(tmp_path, resume=True, resume_seconds=10.0)
    assert load_checkpoint(done.checkpoint)["config"]["seed"] == 3
    # a finished stage is reused only with the same settings
    with pytest.raises(SettingsMismatch, match="epochs: 4 -> 6"):
        _train(tmp_path, resume=True, epochs=6)
    assert _train(tmp_path, resume=True).metrics == done.metrics


def test_cli_resume_with_another_seed_names_the_keys(tmp_path, seqfile, capsys):
    args = ["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
            "--out", str(tmp_path / "r"), *TINY_SETS]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--resume", "--seed", "5", "--set", "lr=0.01"]) == 2
    line = _one_line(capsys)
    assert "lr: 0.001 -> 0.01" in line and "seed: 0 -> 5" in line


# 4. reproduce reuses a run only when its saved settings equal the plan ------------------------

def _reproduce(out, *extra):
    return main(["reproduce", "--datasets", "ml-100k", "--models", "sasrec", "--seeds", "1",
                 "--protocols", "strict", "--out", str(out), *extra])


def test_reproduce_refuses_runs_trained_with_another_preset(tmp_path, capsys, monkeypatch):
    from collapse_kit.study import runs, schedule

    # a finished "tiny" run, made directly (no subprocess): 1 epoch of the tiny preset
    spec = runs.plan_runs(["ml-100k"], ["sasrec"], 1, protocols=["strict"])[0]
    folder = spec.folder(tmp_path)
    argv = spec.command(tmp_path, "tiny")[3:]  # drop "python -m collapse_kit.cli"
    assert main(argv + ["--epochs", "1", "--set", "hidden=16", "--set", "n_heads=2"]) == 0
    assert (folder / "sasrec.pt").exists()
    capsys.readouterr()
    assert _reproduce(tmp_path, "--preset", "paper", "--train-only") == 2
    line = _one_line(capsys)
    assert "epochs: 1 -> 500" in line and "hidden: 16 -> 128" in line
    assert _reproduce(tmp_path, "--preset", "paper", "--report-only") == 2
    assert "other settings" in _one_line(capsys)
    # the same settings are reused: nothing is trained, the plan says so
    status = schedule.run_plan([spec], tmp_path, "tiny",
                                  extra_sets={"epochs": "1", "hidden": "16", "n_heads": "2"},
                                  log=lambda m: None)
    assert status == {str(folder): "reused"}
    status = schedule.run_plan([spec], tmp_path, "tiny", extra_sets={"lr": "0.01"},
                                  log=lambda m: None)
    assert status[str(folder)].startswith("refused: trained with other settings")


def test_reproduce_checks_every_set_before_starting(tmp_path, capsys):
    assert _reproduce(tmp_path, "--set", "bogus=1") == 2
    assert "unknown --set key 'bogus'" in _one_line(capsys)
    assert _reproduce(tmp_path, "--set", "lr=abc") == 2
    assert "expected a number" in _one_line(capsys)
    assert _reproduce(tmp_path, "--set", "n_heads=0") == 2
    assert "n_heads must be >= 1" in _one_line(capsys)
    assert _reproduce(tmp_path, "--bootstrap", "-5") == 2
    assert "--bootstrap" in _one_line(capsys)
    assert not any(tmp_path.iterdir())


# 5. one writer per run folder; a terminated reproduce ends its children ----------------------

def test_second_writer_into_a_run_folder_is_refused(tmp_path, seqfile, capsys):
    out = tmp_path / "r"
    with folder_lock(out):
        assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                     "--out", str(out), *TINY_SETS]) == 2
        assert f"in use by another training process (pid {os.getpid()})" in _one_line(capsys)
    assert not (out / "sasrec.pt").exists()
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                 "--out", str(out), *TINY_SETS]) == 0  # the lock went with its holder


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = ("import sys, time; from adrec.train import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(OSError, match=f"pid {proc.pid}"):
        with folder_lock(tmp_path):
            pass
    proc.kill()
    proc.wait()
    with folder_lock(tmp_path):  # kill -9 leaves no stale lock
        pass


def test_sigterm_to_reproduce_ends_its_training_children(tmp_path, seqfile):
    proc = subprocess.Popen(
        [sys.executable, "-m", "collapse_kit.cli", "reproduce", "--datasets", str(seqfile),
         "--models", "sasrec", "--seeds", "1", "--protocols", "strict", "--out", str(tmp_path),
         "--train-only", "--jobs", "1", "--set", "epochs=100000", "--set", "eval_every=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_path = tmp_path / "runs" / "tiny" / "sasrec" / "s0-strict" / "sasrec.log.jsonl"
    deadline = time.time() + 120
    while not log_path.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert log_path.exists(), "the child never started training"
    lock = (log_path.parent / ".lock").read_text().strip()
    child = int(lock)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"training child {child} still runs after its reproduce was terminated")


# 6. a torn log line does not wedge a run -----------------------------------------------------

def test_torn_last_log_line_is_dropped_on_resume(tmp_path):
    full = _train(tmp_path, "full")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, callbacks=[_StopAt(2)], resume_seconds=0.0)
    log_path = tmp_path / "run" / "sasrec.log.jsonl"
    with open(log_path, "a") as f:
        f.write('{"stage": "sasrec", "epoch": 2, "lo')  # a full disk tore this line
    resumed = _train(tmp_path, resume=True)
    assert resumed.metrics["strict"] == full.metrics["strict"]
    assert [r["epoch"] for r in read_log(log_path)] == [r["epoch"] for r in full.history]


def test_damaged_log_line_before_the_end_names_the_file(tmp_path):
    path = tmp_path / "s.log.jsonl"
    path.write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"s\.log\.jsonl: line 2"):
        read_log(path)
    path.write_text('{"epoch": 1}\n{"epo')
    assert read_log(path) == [{"epoch": 1}]


# 7. one line instead of a traceback ---------------------------------------------------------

@pytest.mark.parametrize("pair,needle", [("n_heads=0", "n_heads must be >= 1"),
                                         ("hidden=0", "hidden must be >= 1"),
                                         ("n_blocks=-1", "n_blocks must be >= 1"),
                                         ("hidden=10", "divisible"),
                                         ("dropout=1.5", "dropout must be in")])
def test_bad_model_sizes_are_one_line(tmp_path, seqfile, capsys, pair, needle):
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                 "--out", str(tmp_path / "r"), "--no-progress", "--set", pair]) == 2
    assert needle in _one_line(capsys)


def test_corrupt_gzip_dataset_is_one_line(tmp_path, seqfile, capsys):
    data = gzip.compress(seqfile.read_bytes())
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:60]) + data[60:])
    assert main(["data", "stats", str(bad)]) == 2
    assert str(bad) in _one_line(capsys)


def test_item_ids_beyond_int64_or_sparse_are_one_line(tmp_path, capsys):
    p = tmp_path / "big.tsv"
    p.write_text("user\ttrain\tvalid\ttest\n1\t1 2 99999999999999999999\t3\t4\n")
    assert main(["data", "stats", str(p)]) == 2
    assert "item ids must be integers" in _one_line(capsys)
    p.write_text("user\ttrain\tvalid\ttest\n1\t1 2 900000000000\t3\t4\n")
    assert main(["data", "stats", str(p)]) == 2
    assert "re-index" in _one_line(capsys)


def test_users_without_a_training_pair_are_one_line(tmp_path, capsys):
    p = tmp_path / "one.tsv"
    p.write_text("user\ttrain\tvalid\ttest\n1\t1\t2\t3\n2\t2\t3\t1\n3\t3\t1\t2\n")
    assert main(["train", "--model", "sasrec", "--dataset", str(p), "--epochs", "1",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "no training samples" in _one_line(capsys)


def test_empty_files_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert main(["evaluate", str(empty)]) == 2
    assert "empty" in _one_line(capsys)
    assert main(["train", "--model", "adrec", "--dataset", "ml-100k", "--stage1", str(empty),
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "empty" in _one_line(capsys)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifos_are_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for argv in (["evaluate", str(fifo)], ["data", "stats", str(fifo)]):
        r = subprocess.run([sys.executable, "-m", "collapse_kit.cli", *argv],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr


def test_checkpoint_with_config_none_and_a_device_as_dataset(tmp_path, seqfile, trained,
                                                            capsys):
    ck = safe_load(trained)
    ck["config"] = None
    torch.save(ck, tmp_path / "none.pt")
    assert main(["evaluate", str(tmp_path / "none.pt"), "--dataset", str(seqfile)]) == 0
    capsys.readouterr()
    ck["dataset"] = {**ck["dataset"], "name": "/dev/zero"}
    torch.save(ck, tmp_path / "zero.pt")
    r = subprocess.run([sys.executable, "-m", "collapse_kit.cli", "evaluate",
                        str(tmp_path / "zero.pt")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr


def test_unexpected_exceptions_are_internal_errors(monkeypatch, capsys):
    import collapse_kit.commands.train as train_cmd

    def boom(args):
        raise KeyError("loss")

    monkeypatch.setattr(train_cmd, "cmd_data_stats", boom)
    assert main(["data", "stats", "ml-100k"]) == 1
    line = _one_line(capsys, "collapse-kit: internal error (please report")
    assert "KeyError" in line


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model"])
    assert exc.value.code == 2
    line = _one_line(capsys)
    assert "--model" in line and "collapse-kit train --help" in line
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice" in _one_line(capsys)


# 9. a key both configs declare reaches both ---------------------------------------------------

def test_max_len_reaches_trainer_and_model(tmp_path, seqfile, capsys):
    train_over, model_over = parse_overrides(["max_len=60"], TrainConfig, SASRecArgs)
    assert train_over == {"max_len": 60} and model_over == {"max_len": 60}
    out = tmp_path / "r"
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                 "--out", str(out), "--set", "max_len=60", *TINY_SETS]) == 0
    ck = load_checkpoint(out / "sasrec.pt")
    assert ck["config"]["max_len"] == 60 and ck["model_args"]["max_len"] == 60
    assert ck["state_dict"]["position_embedding.weight"].shape[0] >= 60


def test_trainer_window_wider_than_the_model_is_refused_up_front(tmp_path):
    ds = make_dataset()
    model = build_model("sasrec", ds.n_items, SMALL)  # position table of 10
    with pytest.raises(ValueError, match="exceeds the model's position table"):
        train_stage(model, ds, TrainConfig(**{**CFG, "max_len": 20}), tmp_path, stage="s",
                    progress=False)
    assert not any(tmp_path.glob("s.*"))


# lower severity ----------------------------------------------------------------------------

def test_atomic_save_gives_normal_permissions_and_leaves_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_save({"x": torch.zeros(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_stale_temp_files_are_removed_by_the_next_run(tmp_path, seqfile, capsys):
    out = tmp_path / "r"
    out.mkdir()
    stale = out / ".sasrec.resume.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--model", "sasrec", "--dataset", str(seqfile), "--epochs", "1",
                 "--out", str(out), *TINY_SETS]) == 0
    assert not stale.exists()


@pytest.mark.parametrize("make,needle", [(lambda t: t.to_sparse(), "sparse_coo tensor"),
                                         (lambda t: torch.quantize_per_tensor(
                                             t, 0.1, 0, torch.qint8), "quantized"),
                                         (lambda t: t.to("meta"), "meta tensor")])
def test_sparse_quantized_and_meta_weights_say_what_to_do(tmp_path, seqfile, trained, capsys,
                                                          make, needle):
    ck = safe_load(trained)
    key = "item_embedding.weight"
    ck["state_dict"][key] = make(ck["state_dict"][key])
    bad = tmp_path / "bad.pt"
    try:
        torch.save(ck, bad)
    except Exception:  # pragma: no cover - a torch that cannot save this kind at all
        pytest.skip("this torch cannot save such a tensor")
    assert main(["evaluate", str(bad), "--dataset", str(seqfile)]) == 2
    line = _one_line(capsys)
    assert needle in line


@pytest.mark.parametrize("text,needle", [("item_id,a\n1,no\n", "must be 0 or 1"),
                                         ("item_id,a\n1,1\n1,0\n", "repeats line 2")])
def test_label_files_refuse_non_binary_values_and_duplicates(tmp_path, text, needle):
    from probes.labels import load_item_labels

    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=needle):
        load_item_labels(path, 1)


def test_label_file_with_a_utf8_bom_reads_like_without(tmp_path):
    from probes.labels import load_item_labels

    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text("item_id,a,b\n1,1,0\n2,0,1\n")
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # as Excel writes CSVs
    a, b = load_item_labels(plain, 2), load_item_labels(bom, 2)
    assert a.names == b.names == ["a", "b"] and (a.Y == b.Y).all()


def test_table5_interval_cells_of_undefined_metrics():
    from collapse_kit.study.report import _interval_cell

    r = {"isotropy": None, "isotropy_undefined": "needs n > d",
         "effective_rank": 3.25, "effective_rank_ci_low": 3.0, "effective_rank_ci_high": 3.5,
         "effective_rank_gaussian": None}
    assert _interval_cell(r, "isotropy") == "n/a (needs n > d)"
    assert _interval_cell(r, "effective_rank") == "3.250 [3.000, 3.500] (G n/a)"


@pytest.mark.parametrize("content,needle", [(b"hello, this is text\n", "a text file"),
                                            (gzip.compress(b"x" * 100), "gzip-compressed"),
                                            (b"\x93NUMPY\x01\x00", "NumPy .npy"),
                                            (b"PK\x03\x04garbage", "corrupt or truncated")])
def test_foreign_files_given_as_checkpoints_say_what_they_are(tmp_path, capsys, content, needle):
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 2
    line = _one_line(capsys)
    assert needle in line and "pickled" not in line


def test_a_test_guarding_a_readme_number_fails_the_run_when_it_skips(tmp_path):
    """CI may not pass while a README number goes unchecked: tests/conftest.py turns the skip
    of a ``guards_readme`` test into a failure (an unmarked skip stays a skip)."""
    import subprocess
    import sys

    (tmp_path / "test_guard.py").write_text(
        "import pytest\n\n@pytest.mark.guards_readme\ndef test_marked():\n"
        "    pytest.skip('data absent')\n\ndef test_plain():\n    pytest.skip('optional')\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_guard.py")],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "guards a README number and may not skip (skipped: data absent)" in done.stdout
    assert "1 failed, 1 skipped" in done.stdout
