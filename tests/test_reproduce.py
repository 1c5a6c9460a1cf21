"""`collapse-kit reproduce`: the run plan, reuse of finished runs, and the written tables."""
import gzip
from pathlib import Path

import pytest

from collapse_kit.cli import main
from adrec.config import ABLATIONS
from collapse_kit.study.runs import RunSpec, plan_runs
from tests.conftest import make_dataset


def test_plan_has_every_model_seed_and_protocol_and_one_seed_per_ablation():
    plan = plan_runs(["ml-100k"], ["sasrec", "adrec"], 2, ablations=True)
    main_runs = [s for s in plan if not s.variant]
    assert len(main_runs) == 2 * 2 * 2  # models x seeds x protocols
    assert len([s for s in plan if s.variant]) == len(ABLATIONS)  # one seed by default


def test_run_folders_and_stage1_sources(tmp_path):
    spec = RunSpec("ml-100k", "adrec", 1, "strict", "w/o warm-up", {"warmup": False})
    assert spec.folder(tmp_path) == tmp_path / "runs/ml-100k/adrec-no-warm-up/s1-strict"
    assert spec.stage1_source(tmp_path) == tmp_path / "runs/ml-100k/adrec/s1-strict/stage1.pt"
    e2e = RunSpec("ml-100k", "adrec", 0, "strict", "w/o pre-train",
                  dict(ABLATIONS["w/o pre-train"]))
    assert e2e.stage1_source(tmp_path) is None
    assert RunSpec("ml-100k", "adrec", 0).checkpoint(tmp_path).name == "best.pt"


def test_an_ablation_run_is_a_resumable_train_command_from_the_shared_stage1(tmp_path):
    spec = RunSpec("ml-100k", "adrec", 1, "strict", "w/o warm-up", {"warmup": False})
    cmd = spec.command(tmp_path, "quick")
    assert cmd[1:4] == ["-m", "collapse_kit.cli", "train"] and "--resume" in cmd
    assert "--stage1" in cmd and "warmup=false" in cmd and "epochs=30" in cmd


def test_plan_named_ablations_only():
    # paper names and folder names both select a variant; the plan keeps ABLATIONS' order
    plan = plan_runs(["baby"], ["adrec"], 1, protocols=["strict"],
                     ablations=["no-mse", "w/o warm-up", "adrec-no-pre-train", "w/o warm-up"])
    assert [s.variant for s in plan if s.variant] == ["w/o warm-up", "w/o pre-train", "w/o mse"]
    assert [s.name for s in plan] == ["adrec", "adrec-no-warm-up", "adrec-no-pre-train",
                                      "adrec-no-mse"]
    assert plan[-1].model_settings == ABLATIONS["w/o mse"]
    every = [s.variant for s in plan_runs(["baby"], ["adrec"], 1, ablations=[]) if s.variant]
    assert every == list(ABLATIONS)  # a bare --ablations: all of them
    assert not [s for s in plan_runs(["baby"], ["adrec"], 1, ablations=None) if s.variant]


def test_reproduce_unknown_ablation_is_one_line(tmp_path, capsys):
    code = main(["reproduce", "--datasets", "ml-100k", "--models", "adrec", "--ablations",
                 "w/o attention", "--out", str(tmp_path / "o"), "--train-only"])
    err = capsys.readouterr().err
    assert code != 0 and "unknown ablation 'w/o attention'" in err and "no-warm-up" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    # a bare --ablations (followed by another flag) still means "all variants"
    assert main(["reproduce", "--models", "sasrec", "--ablations", "--seeds", "1",
                 "--out", str(tmp_path / "o"), "--train-only"]) != 0
    assert "--ablations needs adrec" in capsys.readouterr().err


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
    assert not (out / "tables" / "table5-paper-tiny.md").exists()  # no paper Table 5 here
    ckpts = sorted(out.glob("runs/**/sasrec.pt"))
    assert len(ckpts) == 4  # 2 seeds x 2 protocols
    mtimes = [p.stat().st_mtime for p in ckpts]
    capsys.readouterr()
    assert main(args) == 0  # everything reused, nothing retrained
    assert [p.stat().st_mtime for p in ckpts] == mtimes
    assert "training" not in capsys.readouterr().err


def test_table2_stamp_names_the_training_matmul_precision(tmp_path):
    data = _tiny_file(tmp_path)
    out = tmp_path / "out"
    assert main(["reproduce", "--datasets", str(data), "--models", "sasrec", "--seeds", "1",
                 "--protocols", "strict", "--preset", "tiny", "--out", str(out),
                 "--bootstrap", "0", "--set", "hidden=16", "--set", "n_heads=2",
                 "--set", "matmul_precision=medium"]) == 0
    csv = (out / "tables" / "table2-strict-tiny.csv").read_text()
    assert "# matmul precision: medium\n" in csv


def test_default_auto_precision_reuses_runs_of_any_precision_an_explicit_one_must_match(
        tmp_path, capsys):
    """Regression (default matmul_precision=auto): a study planned at the default reuses runs
    trained at "highest" (the planned "auto" is not compared with a saved, resolved value), while
    an explicit --set matmul_precision=medium refuses them, naming the key."""
    data = _tiny_file(tmp_path)
    out = tmp_path / "out"
    common = ["reproduce", "--datasets", str(data), "--models", "sasrec", "--seeds", "1",
              "--protocols", "strict", "--preset", "tiny", "--out", str(out), "--bootstrap", "0",
              "--set", "hidden=16", "--set", "n_heads=2"]
    assert main(common + ["--set", "matmul_precision=highest", "--train-only"]) == 0
    ckpt = next(out.glob("runs/**/sasrec.pt"))
    mtime = ckpt.stat().st_mtime
    capsys.readouterr()
    assert main(common) == 0  # default auto: reused, not retrained
    assert ckpt.stat().st_mtime == mtime
    assert "# matmul precision: highest\n" in (out / "tables" / "table2-strict-tiny.csv").read_text()
    capsys.readouterr()
    assert main(common + ["--set", "matmul_precision=medium"]) == 2
    assert "matmul_precision: 'highest' -> 'medium'" in capsys.readouterr().err
    assert ckpt.stat().st_mtime == mtime


def test_reproduce_bad_dataset(capsys, tmp_path):
    assert main(["reproduce", "--datasets", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_order_agreement_counts_pairs_and_skips_paper_ties():
    from collapse_kit.study.report import order_agreement

    agree, compared, wrong = order_agreement({"A": 3.0, "B": 2.0, "C": 1.0, "D": 5.0},
                                             {"A": 3.0, "B": 1.0, "C": 2.0})
    assert (agree, compared) == (2, 3)  # D is not in the paper; B/C are reversed
    assert wrong == ["B > C here, < in the paper"]
    agree, compared, wrong = order_agreement({"A": 1.0, "B": 2.0, "C": None},
                                             {"A": 4.85, "B": 4.85, "C": 1.0})
    assert (agree, compared, wrong) == (0, 0, [])  # a printed tie orders nothing; None skipped


def _table5_row(E):
    from collapse_kit.analyze import compare_metrics

    return compare_metrics(E, corrected=True)


def test_table5_vs_paper_cells_and_verdicts():
    import numpy as np

    from collapse_kit.study.report import table5_vs_paper
    from collapse_kit.metrics import gaussian_table

    rng = np.random.default_rng(1)
    iso = rng.normal(size=(400, 32))
    aniso = iso @ rng.normal(size=(32, 32))  # far from isotropic: larger SV 1, lower entropy
    gauss = ("Gaussian (same shape, seed 0)", _table5_row(gaussian_table(400, 32, random_state=0)))
    # ADRec anisotropic, SASRec+ isotropic: the paper's Baby ordering on every metric
    rows = table5_vs_paper([("SASRec+", _table5_row(iso)), ("ADRec stage 3", _table5_row(aniso)),
                            ("Silly", _table5_row(iso)), gauss], "baby")
    assert [r[0] for r in rows] == ["SASRec+", "ADRec stage 3 / ADRec", gauss[0],
                                    "same order as the paper"]
    assert rows[1][1].endswith(" / 247.88") and rows[0][6].endswith(" / 1.09")
    assert rows[2][1].endswith(" / –")
    assert all(v == "yes (1/1 pairs)" for v in rows[-1][1:])
    # the other way round, every metric is ordered against the paper
    flipped = table5_vs_paper([("SASRec+", _table5_row(aniso)),
                               ("ADRec stage 3", _table5_row(iso))], "baby")
    assert all(v.startswith("no (0/1 pairs): ") for v in flipped[-1][1:])
    assert "SASRec+ > ADRec here, < in the paper" in flipped[-1][1]
    assert table5_vs_paper([("SASRec+", _table5_row(iso))], "yelp") == []
    assert table5_vs_paper([("Silly", _table5_row(iso))], "baby") == []


def test_table5_vs_paper_undefined_metric_is_na_and_not_compared():
    import numpy as np

    from collapse_kit.study.report import table5_vs_paper

    rng = np.random.default_rng(0)
    a, b = _table5_row(rng.normal(size=(300, 16))), _table5_row(rng.normal(size=(300, 16)) * 3)
    a.pop("isotropy", None)
    a["isotropy_undefined"] = "test"
    rows = table5_vs_paper([("SASRec+", a), ("DreamRec", b)], "ml-100k")
    assert rows[0][5].startswith("n/a / ")
    assert rows[-1][5] == "– (no pair to compare)"


def test_paper_table5_transcription():
    from collapse_kit.study.paper import PAPER_TABLE2, PAPER_TABLE5, PAPER_TABLE5_KEYS

    assert set(PAPER_TABLE5) == set(PAPER_TABLE2)
    for dataset, models in PAPER_TABLE5.items():
        assert set(models) == {"sasrec", "adrec", "diffurec", "dreamrec"}
        for v in models.values():
            assert len(v) == len(PAPER_TABLE5_KEYS) and len(v[0]) == 5
            assert list(v[0]) == sorted(v[0], reverse=True)  # singular values are descending
        # the paper's headline: ADRec has the largest SV 1 and the lowest covariance entropy
        assert max(models, key=lambda m: models[m][0][0]) in ("adrec", "diffurec")
        assert min(models, key=lambda m: models[m][3]) == "adrec"


def test_paper_tables_read_from_their_csv_files_give_the_printed_numbers():
    """Spot values of the paper's Tables 2, 4 and 5 as printed, read from paper_tables/*.csv
    (every dataset and every row present, numbers exact, Table 5's top-5 gathered)."""
    from collapse_kit.study import paper

    datasets = {"ml-100k", "baby", "beauty", "sports", "toys"}
    assert set(paper.PAPER_TABLE2) == set(paper.PAPER_TABLE4) == datasets
    assert paper.PAPER_TABLE2["ml-100k"]["adrec"] == (22.0699, 9.0028)
    assert paper.PAPER_TABLE2["toys"]["dreamrec"] == (0.4755, 0.1731)
    assert list(paper.PAPER_TABLE4["beauty"]) == ["ADRec", "w/o warm-up", "w/o pre-train",
                                                  "w/o mse", "w/o CAM", "MLP"]
    assert paper.PAPER_TABLE4["sports"]["w/o warm-up"] == (7.2156, 3.7413)
    assert paper.PAPER_TABLE5["sports"]["adrec"] == (
        (415.16, 355.94, 317.4, 275.3, 257.72), 433.0, 4.65, 3.97, 0.01, 10.37)
    for dataset in datasets:  # Table 4's ADRec row is Table 2's ADRec row
        assert paper.PAPER_TABLE4[dataset]["ADRec"] == paper.PAPER_TABLE2[dataset]["adrec"]


def test_paper_tables_are_package_data():
    """The CSV files ship with the package (pyproject's package-data glob matches all three)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["collapse_kit"]
    files = sorted(p.relative_to(root / "collapse_kit").as_posix()
                   for p in (root / "collapse_kit" / "study" / "paper_tables").glob("*"))
    assert files == ["study/paper_tables/table2.csv", "study/paper_tables/table4.csv",
                     "study/paper_tables/table5.csv"]
    assert all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)


def test_table5_falls_back_to_the_official_run_when_the_strict_table_was_stripped(tmp_path):
    import torch

    from collapse_kit.study.report import embedding_checkpoints

    data = _tiny_file(tmp_path)
    out = tmp_path / "out"
    assert main(["reproduce", "--datasets", str(data), "--models", "sasrec", "--seeds", "1",
                 "--preset", "tiny", "--out", str(out), "--bootstrap", "0", "--train-only",
                 "--set", "hidden=16", "--set", "n_heads=2"]) == 0
    runs = plan_runs([str(data)], ["sasrec"], 1)
    strict = next(s for s in runs if s.protocol == "strict").checkpoint(out)
    official = next(s for s in runs if s.protocol == "official").checkpoint(out)
    assert embedding_checkpoints(runs, out) == [("SASRec+", strict)]
    ck = torch.load(strict, map_location="cpu", weights_only=True)  # as pack_runs strips it
    ck["item_embeddings"] = torch.empty(0, ck["item_embeddings"].shape[1])
    ck["table_stripped"] = True
    torch.save(ck, strict)
    assert embedding_checkpoints(runs, out) == [("SASRec+", official)]
    assert main(["reproduce", "--datasets", str(data), "--models", "sasrec", "--seeds", "1",
                 "--preset", "tiny", "--out", str(out), "--bootstrap", "0", "--report-only",
                 "--set", "hidden=16", "--set", "n_heads=2"]) == 0
    table5 = (out / "tables" / "table5-tiny.md").read_text()
    assert "official runs" in table5


def test_table4_puts_the_papers_row_of_each_dataset_beside_ours(tmp_path, monkeypatch):
    import collapse_kit.study.paper as paper
    from collapse_kit.study.report import ablation_tables
    from collapse_kit.study.runs import Run

    def fake_metrics(run, stage=None):  # test HR@20 = 5 + seed, NDCG@20 = 2 + seed / 10
        return {"strict": {"test": {"HR@20": 5.0 + run.spec.seed,
                                    "NDCG@20": 2.0 + run.spec.seed / 10}},
                "trained_on": "CPU", "matmul_precision": "highest"}

    monkeypatch.setattr(Run, "metrics", fake_metrics)
    for dataset, want in (("baby", ["7.15 / 3.15", "6.75 / 2.95", "4.04 / 1.95"]),
                          ("ml-100k", ["22.07 / 9.00", "21.01 / 8.32", "13.29 / 5.34"]),
                          ("tiny", ["–", "–", "–"])):
        plan = plan_runs([dataset], ["adrec"], 2, protocols=["strict"], ablation_seeds=1,
                         ablations=["w/o warm-up", "w/o mse"])
        [(name, table)] = ablation_tables([Run(s, tmp_path) for s in plan], {})
        assert name == "table4"
        assert [r[0] for r in table.rows] == ["ADRec", "w/o warm-up", "w/o mse"]
        assert [r[3] for r in table.rows] == want
        assert table.rows[0][4] == "2" and table.rows[1][4] == "1"  # seeds per row
        assert table.rows[1][1].startswith("5.00") and table.rows[0][1].startswith("5.50")
    assert paper.PAPER_TABLE4_ML100K is paper.PAPER_TABLE4["ml-100k"]


def test_quickstart_trains_both_models_and_writes_the_report(tmp_path, capsys):
    """The README's main job end to end (tiny preset): SASRec+ and ADRec's three stages on the
    bundled ML-100K, then one report with Table 2, Table 5, the probe and the figures."""
    out = tmp_path / "qs"
    assert main(["quickstart", "--preset", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    report = (out / "report.md").read_text()
    assert "- preset: tiny\n" in report and "- preset: paper" not in report
    table2 = (out / "tables" / "table2-strict-ml-100k.csv").read_text()
    assert "SASRec+," in table2 and "\nADRec," in table2 and "stage1 (ADRec stage 1)," in table2
    for stage in ("stage1", "stage2", "stage3", "best"):
        assert (out / "runs" / "ml-100k" / "adrec" / "s0-strict" / f"{stage}.pt").exists()
    assert list((out / "figures").glob("*.png"))


def test_quickstart_defaults_to_the_papers_schedule():
    import argparse

    from collapse_kit.commands import reproduce

    sub = argparse.ArgumentParser().add_subparsers()
    reproduce.register(sub)
    args = sub.choices["quickstart"].parse_args([])
    assert args.preset == "paper" and args.out == "runs/quickstart" and args.seed == 0
