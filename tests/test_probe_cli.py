"""`collapse-kit probe` and `probe-compare`: JSON keys, Table 6 layout, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from collapse_kit.cli import main

QUICK = ["--seeds", "2", "--batch-size", "16"]  # 120 training items: 6 steps per epoch


@pytest.fixture
def planted(tmp_path):
    """A table whose two labels are linear functions of it, and its label file."""
    rng = np.random.default_rng(0)
    E = rng.standard_normal((120, 6)).astype(np.float32)
    Y = (E[:, :2] > 0.5).astype(int)
    np.save(tmp_path / "table.npy", E)
    np.save(tmp_path / "other.npy", rng.standard_normal((120, 6)).astype(np.float32))
    lines = ["item_id,x,y"] + [f"{i + 1},{a},{b}" for i, (a, b) in enumerate(Y)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def _run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_probe_json_has_the_papers_numbers_with_sds(planted, capsys):
    out = _run_json(capsys, ["probe", str(planted / "table.npy"), "--labels", str(planted / "labels.csv"),
                             "--json", *QUICK])
    for key in ("precision", "recall", "f1"):
        assert 0 <= out[key] <= 1 and out[f"{key}_sd"] >= 0
    assert out["f1"] > 0.6
    assert set(out["metrics"]) >= {"micro_f1", "macro_f1", "mean_average_precision"}
    assert len(out["metrics"]["micro_f1"]["per_seed"]) == 2
    assert list(out["baselines"]) == ["gaussian", "all_zero"]  # no popularity for a user label file
    assert out["settings"]["headline_average"] == "micro" and out["settings"]["seeds"] == 2
    assert out["shape"] == [120, 6] and out["labels_occurring"] == ["x", "y"]


def test_probe_table_and_markdown(planted, capsys):
    args = ["probe", str(planted / "table.npy"), "--labels", str(planted / "labels.csv"), *QUICK]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "F1 (micro)" in table and "Gaussian" in table and "all-zero" in table
    assert main(args + ["--format", "markdown", "--popularity", "none"]) == 0
    assert capsys.readouterr().out.startswith("| metric (%) | table | Gaussian | all-zero |")


def test_probe_compare_is_table_6(planted, capsys):
    argv = ["probe-compare", str(planted / "table.npy"), str(planted / "other.npy"), "--names",
            "planted", "noise", "--labels", str(planted / "labels.csv"), *QUICK]
    assert main(argv) == 0
    md = capsys.readouterr().out
    assert md.startswith("| metric (%) | planted | noise | Gaussian | all-zero |")
    assert "| Precision (micro) |" in md
    out = _run_json(capsys, argv + ["--format", "json"])
    assert [r["name"] for r in out["rows"]] == ["planted", "noise"]
    assert out["rows"][0]["f1"] > out["rows"][1]["f1"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("collapse-kit: error:")
    return err[-1]


def test_label_ids_that_do_not_match_the_table(planted, capsys):
    bad = planted / "bad.csv"
    bad.write_text("item_id,x\n1,1\n121,0\n")
    msg = _error(capsys, ["probe", str(planted / "table.npy"), "--labels", str(bad), *QUICK])
    assert "item_id 121 is outside 1..120" in msg
    msg = _error(capsys, ["probe", str(planted / "table.npy"), *QUICK])  # ml-100k genres, 120 items
    assert "item_id 121 is outside 1..120" in msg


def test_unlabelled_items_need_the_flag(planted, capsys):
    part = planted / "part.csv"
    rows = [f"{i},{i % 2}" for i in range(1, 61)]
    part.write_text("item_id,x\n" + "\n".join(rows) + "\n")
    base = ["probe", str(planted / "table.npy"), "--labels", str(part), *QUICK]
    assert "--allow-unlabelled" in _error(capsys, base)
    out = _run_json(capsys, base + ["--allow-unlabelled", "--json"])
    assert out["n_labelled_items"] == 60


def test_bundled_genres_refuse_another_datasets_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    path = tmp_path / "beauty.pt"
    torch.save({"format": "collapse-kit-checkpoint", "format_version": 1, "model": "sasrec",
                "dataset": {"name": "beauty", "n_items": 1008}, "stage": "final",
                "item_embeddings": torch.randn(1008, 8)}, path)
    msg = _error(capsys, ["probe", str(path), *QUICK])
    assert "trained on 'beauty'" in msg and "--labels CSV" in msg


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "0"], "expected an integer >= 1"),
    (["--batch-size", "1"], "expected an integer >= 2 or 'full'"),
])
def test_bad_flags_are_argparse_errors(planted, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main(["probe", str(planted / "table.npy"), *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_bad_learning_rate(planted, capsys):
    msg = _error(capsys, ["probe", str(planted / "table.npy"), "--lr", "-1"])
    assert "lr must be a positive number" in msg


def test_compare_names_must_match(planted, capsys):
    msg = _error(capsys, ["probe-compare", str(planted / "table.npy"), "--names", "a", "b", *QUICK])
    assert "one name per checkpoint" in msg


def test_probe_on_the_authors_checkpoint(official_ckpt, capsys):
    out = _run_json(capsys, ["probe", str(official_ckpt), "--json", "--seeds", "2"])
    assert out["shape"] == [1008, 128] and out["labels"] == "ml-100k-genres"
    assert len(out["labels_occurring"]) == 17
    assert list(out["baselines"]) == ["gaussian", "popularity", "all_zero"]
    # the trained table carries genre information beyond a random table and beyond popularity
    assert out["f1"] > out["baselines"]["gaussian"]["f1"] + 0.1
    ours = out["metrics"]["mean_average_precision"]["mean"]
    assert ours > out["baselines"]["popularity"]["metrics"]["mean_average_precision"]["mean"]
