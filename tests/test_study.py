"""collapse_kit.study and collapse_kit.tables: typed ablations, one Table renderer, a run folder
read once per report, and the item table of an already loaded checkpoint."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from adrec.config import ABLATIONS, PRESETS, setting_text
from collapse_kit.cli import main
from collapse_kit.errors import UserError
from collapse_kit.study.runs import Run, RunSpec, plan_runs
from collapse_kit.tables import Table, atomic_write, latex_escape
from tests.test_reproduce import _tiny_file


# -- typed presets and ablations --------------------------------------------------------------

def test_ablations_are_typed_values_not_cli_strings():
    """A string "false" passed to a dataclass is truthy; the variants hold real booleans."""
    assert ABLATIONS["w/o warm-up"] == {"warmup": False}
    assert ABLATIONS["PCGrad"] == {"pcgrad": True} and ABLATIONS["lambda=1e-4"] == {"lam": 1e-4}
    assert all(isinstance(v, (bool, int, float)) or v == "mlp"
               for settings in ABLATIONS.values() for v in settings.values())
    assert PRESETS["tiny"] == {"epochs": 2, "eval_every": 1, "batch_size": 256}


def test_typed_ablations_give_the_same_train_command_and_resolve_to_booleans(tmp_path):
    spec = RunSpec("ml-100k", "adrec", 0, "strict", "w/o mse", dict(ABLATIONS["w/o mse"]))
    cmd = spec.command(tmp_path, "paper")
    sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
    assert sets == ["protocol=strict", "pretrain=false", "warmup=false", "use_mse=false"]
    args = spec.settings("paper")["model_args"]
    assert args["pretrain"] is False and args["warmup"] is False and args["use_mse"] is False
    lam = RunSpec("ml-100k", "adrec", 0, "strict", "lambda=1e-4",
                  dict(ABLATIONS["lambda=1e-4"]))
    assert "lam=0.0001" in lam.command(tmp_path, "paper")
    assert lam.settings("paper")["model_args"]["lam"] == 1e-4


def test_ablations_take_stage1_from_the_main_run_unless_trained_end_to_end(tmp_path):
    spec = RunSpec("ml-100k", "adrec", 0, "strict", "w/o mse", dict(ABLATIONS["w/o mse"]))
    assert spec.stage1_source(tmp_path) is None  # end to end: no stage-1 checkpoint
    cam = RunSpec("ml-100k", "adrec", 0, "strict", "w/o CAM", dict(ABLATIONS["w/o CAM"]))
    assert cam.stage1_source(tmp_path) == tmp_path / "runs/ml-100k/adrec/s0-strict/stage1.pt"


@pytest.mark.parametrize("value,text", [(True, "true"), (False, "false"), (30, "30"),
                                        (0.01, "0.01"), (1e-4, "0.0001"), ("mlp", "mlp")])
def test_setting_text_reads_back_to_the_same_value(value, text):
    from adrec.config import parse_overrides
    from adrec.models import model_class

    assert setting_text(value) == text
    key = {bool: "warmup", int: "hidden", float: "lam", str: "denoiser"}[type(value)]
    [parsed] = parse_overrides([f"{key}={text}"], model_class("adrec").Args)
    assert parsed[key] == value and type(parsed[key]) is type(value)


# -- one Table --------------------------------------------------------------------------------

def _table(**kw):
    return Table(columns=["name", "value"], rows=[["a_b^c", "1.5 ± 0.1"], ["d", "10"]], **kw)


def test_table_markdown_with_and_without_title_and_alignment():
    assert _table().render("markdown") == (
        "| name | value |\n|---|---|\n| a_b^c | 1.5 ± 0.1 |\n| d | 10 |")
    assert _table(align="lr").render("markdown").splitlines()[1] == "|---|---:|"
    titled = _table(title="T", stamp={"seed": "0"}, notes=["n1"]).render("markdown")
    assert titled.splitlines()[:4] == ["### T", "", "- seed: 0", ""]
    assert titled.endswith("| d | 10 |\n\nn1")


def test_table_latex_escapes_with_one_map():
    tex = _table(title="T").render("latex").splitlines()
    assert tex[0] == "% T" and tex[1] == r"\begin{tabular}{lc}"
    assert tex[5] == r"a\_b\textasciicircum{}c & 1.5 $\pm$ 0.1 \\"
    assert latex_escape("50% & $x_1$ #2 {~}") == \
        r"50\% \& \$x\_1\$ \#2 \{\textasciitilde{}\}"


def test_table_csv_quotes_and_stamp_rows():
    import csv
    import io

    t = Table(columns=["k", "v"], rows=[["a,b", 'say "x"']], stamp={"date": "now"})
    text = t.render("csv")
    assert text.splitlines()[0] == "# date: now" and not text.endswith("\n")
    assert list(csv.reader(io.StringIO(text)))[2] == ["a,b", 'say "x"']


def test_table_text_pads_columns_by_alignment():
    lines = _table(notes=["note"]).render("text").splitlines()
    assert lines == ["name       value", "-----  ---------",
                     "a_b^c  1.5 ± 0.1", "d             10", "", "note"]
    with pytest.raises(ValueError, match="unknown table format 'html'"):
        _table().render("html")


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "t.md"
    atomic_write(path, "one")
    atomic_write(path, b"\x89PNG")
    assert path.read_bytes() == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["t.md"]
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- a run read once ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    data = _tiny_file(tmp)
    out = tmp / "out"
    assert main(["reproduce", "--datasets", str(data), "--models", "sasrec", "adrec",
                 "--seeds", "1", "--protocols", "strict", "--preset", "tiny", "--out", str(out),
                 "--train-only", "--set", "hidden=16", "--set", "n_heads=2"]) == 0
    return data, out


def test_a_report_loads_every_checkpoint_once(tiny_study, monkeypatch):
    import adrec.checkpoint
    from collapse_kit.study.report import write_reports

    data, out = tiny_study
    loads = Counter()
    real = adrec.checkpoint.load_checkpoint

    def counting(path):
        loads[str(path)] += 1
        return real(path)

    monkeypatch.setattr(adrec.checkpoint, "load_checkpoint", counting)
    plan = plan_runs([str(data)], ["sasrec", "adrec"], 1, protocols=["strict"])
    write_reports(plan, out, preset="tiny", seeds=1, bootstrap=2, log=lambda m: None)
    # Table 2 reads best.pt and stage1.pt, Table 5 / t-SNE / spectra the three stage tables and
    # SASRec+'s: each file once, although three tables and two figures use them
    assert loads and max(loads.values()) == 1, loads
    assert {p.rsplit("/", 1)[1] for p in loads} == {"sasrec.pt", "best.pt", "stage1.pt",
                                                    "stage2.pt", "stage3.pt"}
    assert "ADRec stage 3" in (out / "tables" / "table5-tiny.md").read_text()


def test_run_item_table_equals_load_embeddings(tiny_study):
    from collapse_kit.io import load_embeddings

    data, out = tiny_study
    run = Run(RunSpec(str(data), "adrec", 0), out)
    for stage in ("stage1", "stage3"):
        assert np.array_equal(run.item_table(stage), load_embeddings(run.path(stage)).table)
    assert run.item_table("stage3") is run.item_table("stage3")  # converted once
    m = run.metrics()
    assert m["strict"]["test"]["HR@20"] >= 0 and m["wall_seconds"] > 0
    assert Run(RunSpec(str(data), "dreamrec", 0), out).metrics() is None  # not trained


def test_checkpoint_table_of_a_loaded_checkpoint(tiny_study, tmp_path):
    from adrec.checkpoint import load_checkpoint
    from collapse_kit.io import checkpoint_table, load_embeddings

    _, out = tiny_study
    path = next(out.glob("runs/**/sasrec.pt"))
    ck = load_checkpoint(path)
    got, want = checkpoint_table(ck, path), load_embeddings(path)
    assert np.array_equal(got.table, want.table) and got.meta == want.meta
    ck["item_embeddings"] = torch.empty(0, ck["item_embeddings"].shape[1])
    ck["table_stripped"] = True
    with pytest.raises(UserError, match="item table was stripped for transport"):
        checkpoint_table(ck, path)
    with pytest.raises(UserError, match="not a collapse-kit checkpoint"):
        checkpoint_table({"state_dict": {}}, path)


def test_regression_a_pipe_in_a_cell_does_not_split_the_markdown_row():
    """A header "max |Spearman|" once broke the popularity table's Markdown: every cell is now
    escaped, so each row keeps exactly its columns."""
    from collapse_kit.tables import Table

    md = Table(columns=["model", "max |rho|"], rows=[["a|b", "1"]]).render("markdown")
    lines = md.splitlines()
    assert lines[0] == r"| model | max \|rho\| |"
    assert lines[2] == r"| a\|b | 1 |"
    for line in lines:  # unescaped pipes: the row's borders and separators only
        assert line.replace(r"\|", "").count("|") == 3
