"""`collapse-kit reproduce`: the run plan, reuse of finished runs, and the written tables."""
import gzip
from pathlib import Path

import pytest

from collapse_kit.cli import main
from collapse_kit.experiments import ABLATIONS, RunSpec, plan_runs
from tests.conftest import make_dataset


def test_plan_layout_and_ablation_sources(tmp_path):
    plan = plan_runs(["ml-100k"], ["sasrec", "adrec"], 2, ablations=True)
    main_runs = [s for s in plan if not s.variant]
    assert len(main_runs) == 2 * 2 * 2  # models x seeds x protocols
    assert len([s for s in plan if s.variant]) == len(ABLATIONS)  # one seed by default
    spec = RunSpec("ml-100k", "adrec", 1, "strict", "w/o warm-up", {"warmup": "false"})
    assert spec.folder(tmp_path) == tmp_path / "runs/ml-100k/adrec-no-warm-up/s1-strict"
    assert spec.stage1_source(tmp_path) == tmp_path / "runs/ml-100k/adrec/s1-strict/stage1.pt"
    e2e = RunSpec("ml-100k", "adrec", 0, "strict", "w/o pre-train",
                  dict(ABLATIONS["w/o pre-train"]))
    assert e2e.stage1_source(tmp_path) is None
    assert RunSpec("ml-100k", "adrec", 0).checkpoint(tmp_path).name == "best.pt"
    cmd = spec.command(tmp_path, "quick")
    assert cmd[1:4] == ["-m", "collapse_kit.cli", "train"] and "--resume" in cmd
    assert "--stage1" in cmd and "warmup=false" in cmd and "epochs=30" in cmd


@pytest.mark.parametrize("kwargs,needle", [
    (dict(models=["bert4rec"]), "unknown model"),
    (dict(models=["sasrec"], ablations=True), "needs adrec"),
    (dict(models=["sasrec"], seeds=0), "--seeds"),
])
def test_plan_errors(kwargs, needle):
    args = dict(datasets=["ml-100k"], models=["sasrec"], seeds=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle):
        plan_runs(args.pop("datasets"), args.pop("models"), args.pop("seeds"), **args)


def _tiny_file(tmp_path: Path) -> Path:
    ds = make_dataset(n_users=60, n_items=40)
    path = tmp_path / "tiny.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("user\ttrain\tvalid\ttest\n")
        for u, (s, v, t) in enumerate(zip(ds.train, ds.valid, ds.test)):
            f.write(f"{u}\t{' '.join(map(str, s))}\t{v}\t{t}\n")
    return path


def test_reproduce_trains_reuses_and_writes_tables(tmp_path, capsys):
    data = _tiny_file(tmp_path)
    out = tmp_path / "out"
    args = ["reproduce", "--datasets", str(data), "--models", "sasrec", "--seeds", "2",
            "--preset", "tiny", "--out", str(out), "--bootstrap", "0",
            "--set", "hidden=16", "--set", "n_heads=2"]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    assert "Table 2" in report and "SASRec+" in report and "± " in report
    for ext in ("md", "csv", "tex"):
        assert (out / "tables" / f"table2-strict-tiny.{ext}").exists()
    assert "\\pm" in (out / "tables" / "table2-strict-tiny.tex").read_text()
    ckpts = sorted(out.glob("runs/**/sasrec.pt"))
    assert len(ckpts) == 4  # 2 seeds x 2 protocols
    mtimes = [p.stat().st_mtime for p in ckpts]
    capsys.readouterr()
    assert main(args) == 0  # everything reused, nothing retrained
    assert [p.stat().st_mtime for p in ckpts] == mtimes
    assert "training" not in capsys.readouterr().err


def test_reproduce_bad_dataset(capsys, tmp_path):
    assert main(["reproduce", "--datasets", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
