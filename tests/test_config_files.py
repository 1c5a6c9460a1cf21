"""Config files: `train --config run.yaml`, `reproduce --config study.yaml`, and the config.yaml
every run folder holds. A file gives exactly what the same `--set` pairs give; `--set` and flags
override it; bad input is one error naming the key, the file and the line."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adrec.config import (TrainConfig, config_yaml, file_settings, parse_overrides,
                          read_config_file)
from adrec.models import model_class
from collapse_kit.cli import build_parser, main
from collapse_kit.study.runs import MODELS, STUDY_DEFAULTS, plan_study, study_options
from tests.conftest import make_dataset


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _from_file(path, model: str) -> list[dict]:
    entries = read_config_file(path)
    return file_settings([e for k, e in entries.items() if k not in ("model", "dataset")],
                         TrainConfig, model_class(model).Args)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("collapse-kit: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# --- the file means what the same --set pairs mean -------------------------------------------

def test_a_file_gives_exactly_the_settings_of_the_same_set_pairs(tmp_path):
    # 5e-4 is text to YAML 1.1 (no dot), 1.0e-05 a float, yes/off booleans, max_len in both
    path = _write(tmp_path / "run.yaml",
                  "model: adrec\ndataset: ml-100k\nlr: 5e-4\nweight_decay: 1.0e-05\nepochs: 7\n"
                  "max_len: 30\nprotocol: official\nwarmup: off\nuse_cam: yes\nlam: 0.01\n"
                  "denoiser: mlp\nresume_seconds: 0\n")
    pairs = ["lr=5e-4", "weight_decay=1.0e-05", "epochs=7", "max_len=30", "protocol=official",
             "warmup=off", "use_cam=yes", "lam=0.01", "denoiser=mlp", "resume_seconds=0"]
    assert _from_file(path, "adrec") == parse_overrides(pairs, TrainConfig,
                                                        model_class("adrec").Args)
    train, model = _from_file(path, "adrec")
    assert train["lr"] == 5e-4 and train["max_len"] == model["max_len"] == 30
    assert model["warmup"] is False and isinstance(train["resume_seconds"], float)


@pytest.mark.parametrize("model", ["sasrec", "stage1", "adrec", "diffurec", "dreamrec"])
def test_config_yaml_reads_back_to_the_same_config_and_model_args(tmp_path, model):
    cls = model_class(model)
    cfg = TrainConfig(lr=0.1 + 0.2, weight_decay=1e-5, epochs=3, seed=7, device="cpu",
                      matmul_precision="auto", resume_seconds=0.0, max_len=40)
    args = cls.Args(**({"max_len": 40} if "max_len" in cls.Args.__dataclass_fields__ else {}),
                    attention_mask="official", dropout=0.25)
    path = _write(tmp_path / "config.yaml", config_yaml(model, "data/x y.tsv", cfg, args))
    entries = read_config_file(path)
    assert list(entries)[:2] == ["model", "dataset"]
    assert entries["dataset"].node.value == "data/x y.tsv"
    train, margs = _from_file(path, model)
    assert TrainConfig(**train) == cfg and cls.Args(**margs) == args
    assert train["lr"] == 0.1 + 0.2  # the float's exact bits, not a rounded text


def test_config_yaml_refuses_a_trainer_and_model_window_that_differ():
    with pytest.raises(ValueError, match="max_len"):
        config_yaml("sasrec", "ml-100k", TrainConfig(max_len=20),
                    model_class("sasrec").Args(max_len=50))


# --- bad input: one error naming key, file and line ------------------------------------------

@pytest.mark.parametrize("line,needle", [
    ("lrr: 0.1", "run.yaml:3: unknown key 'lrr'; valid keys: "),
    ("lam: 0.1", "run.yaml:3: unknown key 'lam'"),  # an ADRec key, not a SASRec one
    ("lr: fast", "run.yaml:3: lr=fast: expected a number"),
    ("epochs: 2.5", "run.yaml:3: epochs=2.5: expected an integer"),
    ("positions: maybe", "run.yaml:3: positions=maybe: expected true or false"),
    ("protocol: loose", "run.yaml:3: protocol=loose: choose one of strict, official"),
    ("lr: inf", "run.yaml:3: lr=inf: expected a finite number"),
    ('lr: "0.1"', "run.yaml:3: lr=0.1: expected a number, got quoted text"),
    ("lr:", "run.yaml:3: lr: no value given"),
    ("hidden: [16, 32]", "run.yaml:3: hidden: expected one value, got a list"),
    ("lr: 0.1\nlr: 0.2", "run.yaml:4: 'lr' is given twice (first on line 3)"),
    ("lr: !!python/name:os.system ''", "run.yaml:3: lr: unsupported YAML tag"),
])
def test_bad_keys_and_values_name_the_key_file_and_line(tmp_path, capsys, line, needle):
    path = _write(tmp_path / "run.yaml", f"model: sasrec\ndataset: ml-100k\n{line}\n")
    out = tmp_path / "out"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    assert needle in _one_line(capsys)
    assert not out.exists()  # refused before the run folder is made


@pytest.mark.parametrize("text,needle", [
    ("model: sasrec\nlr: [0.1\n", "run.yaml:3: not valid YAML (expected ',' or ']'"),
    ("model: sasrec\n  lr: 0.1\n", "run.yaml:2: not valid YAML (mapping values are not allowed"),
    ("- model\n- sasrec\n", "run.yaml:1: expected `key: value` lines (a YAML mapping), got a list"),
    ("0.5: 1\n", "run.yaml:1: a key must be a setting's name, got '0.5'"),
    (b"lr: \xff\n", "is not UTF-8 text"),
])
def test_malformed_files_are_one_clear_error(tmp_path, capsys, text, needle):
    path = tmp_path / "run.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    assert main(["train", "--config", str(path), "--dataset", "ml-100k"]) == 2
    assert needle in _one_line(capsys)


def test_missing_or_unreadable_file_and_missing_model(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert f"cannot read config file {tmp_path / 'nope.yaml'}: No such file or directory" \
        in _one_line(capsys)
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert "cannot read config file" in _one_line(capsys)
    assert main(["train", "--config", str(_write(tmp_path / "e.yaml", "# nothing\n"))]) == 2
    assert "give --model and --dataset (or model: and dataset: in --config FILE)" \
        in _one_line(capsys)


def test_yaml_tags_never_construct_objects(tmp_path, capsys):
    """Regression guard: the file is composed, never loaded, so a python tag runs nothing."""
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "run.yaml", "model: sasrec\ndataset: ml-100k\n"
                  f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "run.yaml:3: seed: unsupported YAML tag" in _one_line(capsys)
    assert not marker.exists()


def test_cli_bad_config_exits_non_zero_with_one_line_and_no_traceback(tmp_path):
    path = _write(tmp_path / "run.yaml", "model: sasrec\ndataset: ml-100k\n\nepochs: 2.5\n")
    r = subprocess.run([sys.executable, "-m", "collapse_kit.cli", "train", "--config", str(path),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"collapse-kit: error: {path}:4: epochs=2.5: expected an integer"]
    assert not (tmp_path / "out").exists()


# --- train --config: precedence, and a real run repeated from its config.yaml ------------------

class _Captured:
    """Stands in for ``train_model``: records what the command would train."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, dataset, cfg, out, *, model_args, **kw):
        self.calls.append((name, cfg, model_args, kw.get("stage1")))
        metrics = dict.fromkeys(("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"), 0.0)
        summary = {"valid": metrics, "test": metrics, "checkpoint": str(Path(out) / "x.pt")}
        return type("Result", (), {"summary": lambda self, protocol: summary})()


@pytest.fixture
def captured(monkeypatch):
    import adrec.pipeline

    fake = _Captured()
    monkeypatch.setattr(adrec.pipeline, "train_model", fake)
    return fake


def _run_yaml(tmp_path: Path) -> Path:
    return _write(tmp_path / "run.yaml", "model: sasrec\ndataset: ml-100k\nlr: 0.01\n"
                  "epochs: 3\nseed: 4\nhidden: 32\nn_heads: 2\n")


def test_train_config_equals_the_same_flags(tmp_path, captured, capsys):
    path = _run_yaml(tmp_path)
    common = ["--no-progress", "--no-monitor", "--json"]
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["train", "--model", "sasrec", "--dataset", "ml-100k", "--set", "lr=0.01",
                 "--set", "epochs=3", "--set", "seed=4", "--set", "hidden=32", "--set",
                 "n_heads=2", "--out", str(tmp_path / "b"), *common]) == 0
    assert captured.calls[0] == captured.calls[1]
    capsys.readouterr()


def test_train_flags_override_the_config_file(tmp_path, captured, capsys):
    path = _run_yaml(tmp_path)
    common = ["--no-progress", "--no-monitor", "--json"]
    # --set over the file, and --seed / --epochs / --model over both
    assert main(["train", "--config", str(path), "--set", "lr=5e-4", "--set", "hidden=64",
                 "--seed", "9", "--epochs", "1", "--model", "stage1",
                 "--out", str(tmp_path / "c"), *common]) == 0
    name, cfg, model_args, _ = captured.calls[-1]
    assert name == "stage1" and (cfg.lr, cfg.seed, cfg.epochs) == (5e-4, 9, 1)
    assert model_args == {"hidden": 64, "n_heads": 2}
    capsys.readouterr()


def test_stage1_checkpoint_goes_through_the_file_and_config_yaml(tmp_path, captured, capsys):
    path = _write(tmp_path / "run.yaml", "model: adrec\ndataset: ml-100k\nstage1: s1.pt\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "a"),
                 "--no-monitor", "--json"]) == 0
    assert captured.calls[0][3] == "s1.pt"
    saved = read_config_file(tmp_path / "a" / "config.yaml")
    assert saved["stage1"].node.value == "s1.pt" and saved["model"].node.value == "adrec"
    capsys.readouterr()


def _sequences_file(path: Path) -> Path:
    ds = make_dataset(n_users=30, n_items=20)
    rows = ["user\ttrain\tvalid\ttest"] + [
        f"{u + 1}\t{' '.join(map(str, s))}\t{v}\t{t}"
        for u, (s, v, t) in enumerate(zip(ds.train, ds.valid, ds.test))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_writes_config_yaml_and_train_config_repeats_the_run(tmp_path, capsys):
    import torch

    data = _sequences_file(tmp_path / "tiny.tsv")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--model", "sasrec", "--dataset", str(data), "--out", str(a),
                 "--epochs", "1", "--set", "hidden=16", "--set", "n_heads=2", "--set",
                 "batch_size=16", "--set", "lr=5e-3", "--seed", "3", "--no-progress",
                 "--no-monitor", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (a / "config.yaml").is_file() and not list(a.glob(".*.tmp"))  # whole, no leftovers
    ckpt = torch.load(a / "sasrec.pt", weights_only=True)
    train, margs = _from_file(a / "config.yaml", "sasrec")
    assert dataclasses.asdict(TrainConfig(**train)) == ckpt["config"]
    assert dataclasses.asdict(model_class("sasrec").Args(**margs)) == ckpt["model_args"]

    assert main(["train", "--config", str(a / "config.yaml"), "--out", str(b), "--no-progress",
                 "--no-monitor", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (b / "config.yaml").read_text() == (a / "config.yaml").read_text()
    repeat = torch.load(b / "sasrec.pt", weights_only=True)
    assert repeat["config"] == ckpt["config"] and repeat["model_args"] == ckpt["model_args"]
    assert again["test"] == first["test"] and again["valid"] == first["valid"]


# --- reproduce --config: the same plan as the flags -------------------------------------------

def _planned(argv: list[str], out: Path):
    args = build_parser().parse_args(["reproduce", *argv])
    o = study_options({**{k: getattr(args, k) for k in STUDY_DEFAULTS}, "sets": args.overrides},
                      args.config)
    plan, extra = plan_study(o["datasets"], o["models"], o["seeds"], out=out,
                             preset=o["preset"], sets=o["sets"], ablations=o["ablations"],
                             ablation_seeds=o["ablation_seeds"], protocols=o["protocols"])
    return o, plan, extra


def test_reproduce_config_plans_the_same_runs_as_the_flags(tmp_path):
    study = _write(tmp_path / "study.yaml",
                   "datasets: [ml-100k, beauty]\nmodels: [sasrec, adrec]\nseeds: 2\n"
                   "ablations: [no-warm-up, MLP]\nablation_seeds: 2\npreset: tiny\n"
                   "protocols: strict\nbootstrap: 0\nset:\n  device: cpu\n  lr: 5e-4\n"
                   "  max_len: 30\n")
    flags = ["--datasets", "ml-100k", "beauty", "--models", "sasrec", "adrec", "--seeds", "2",
             "--ablations", "no-warm-up", "MLP", "--ablation-seeds", "2", "--preset", "tiny",
             "--protocols", "strict", "--bootstrap", "0", "--set", "device=cpu",
             "--set", "lr=5e-4", "--set", "max_len=30"]
    o_file, plan_file, extra_file = _planned(["--config", str(study)], tmp_path)
    o_flags, plan_flags, extra_flags = _planned(flags, tmp_path)
    assert plan_file == plan_flags and len(plan_file) == 2 * 2 * 2 + 2 * 2 * 2
    assert extra_file == extra_flags == {"device": "cpu", "lr": "5e-4", "max_len": "30"}
    assert o_file == o_flags  # every option, the --set pairs included
    spec = plan_file[-1]
    assert spec.command(tmp_path, "tiny", extra_file) == \
        plan_flags[-1].command(tmp_path, "tiny", extra_flags)


def test_reproduce_flags_and_set_override_the_study_file(tmp_path):
    study = _write(tmp_path / "study.yaml", "models: [sasrec]\nseeds: 3\npreset: tiny\n"
                   "ablations: false\nset:\n  lr: 0.01\n  device: cpu\n")
    o, plan, extra = _planned(["--config", str(study), "--seeds", "1", "--set", "lr=0.002"],
                              tmp_path)
    assert o["seeds"] == 1 and o["preset"] == "tiny" and o["ablations"] is None
    assert o["datasets"] == ["ml-100k"] and o["protocols"] == ["strict", "official"]  # defaults
    assert extra == {"lr": "0.002", "device": "cpu"}
    assert [(s.model, s.seed) for s in plan] == [("sasrec", 0), ("sasrec", 0)]


def test_study_file_ablations_true_means_every_variant_of_every_model(tmp_path):
    o, _, _ = _planned(["--config", str(_write(tmp_path / "all.yaml", "ablations: true\n"))],
                       tmp_path)
    assert o["ablations"] == [] and o["models"] == list(MODELS)  # [] = every variant


@pytest.mark.parametrize("text,needle", [
    ("seed: 2\n", "study.yaml:1: unknown key 'seed'; a study file holds datasets,"),
    ("models: [sasrec]\nseeds: two\n", "study.yaml:2: seeds=two: expected an integer"),
    ("models: [sasrec, bert4rec]\n", "study.yaml:1: models: unknown 'bert4rec'"),
    ("preset: slow\n", "study.yaml:1: preset: unknown 'slow'; choose from paper, quick, tiny"),
    ("ablations: [no-sleep]\n", "study.yaml:1: unknown ablation 'no-sleep'"),
    ("models: [sasrec]\nset:\n  lam: 0.1\n",
     "study.yaml:3: unknown key 'lam' (in set:, for model sasrec)"),
    ("models: [adrec]\nset:\n  lr: fast\n", "study.yaml:3: lr=fast: expected a number"),
    ("set: 3\n", "study.yaml:1: set: expected indented `key: value` lines"),
])
def test_bad_study_files_are_one_line_naming_key_and_line(tmp_path, capsys, text, needle):
    study = _write(tmp_path / "study.yaml", text)
    assert main(["reproduce", "--config", str(study), "--out", str(tmp_path / "o")]) == 2
    assert needle in _one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_reproduce_needs_out_from_a_flag_or_the_file(tmp_path, capsys):
    assert main(["reproduce", "--models", "sasrec"]) == 2
    assert "give --out FOLDER (or an out: line in --config FILE)" in _one_line(capsys)


# --- the README's examples read as documented -------------------------------------------------

def _readme_block(start: str, end: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def test_readme_config_examples_read_as_documented(tmp_path, captured, capsys, monkeypatch):
    from adrec.config import resolve_matmul_precision
    from adrec.train import resolve_device

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "run.yaml", _readme_block("cat > run.yaml <<'EOF'\n", "EOF\n"))
    assert main(["train", "--config", "run.yaml", "--set", "lr=5e-4", "--out",
                 "runs/sasrec-yaml", "--no-monitor", "--json"]) == 0
    assert main(["train", "--config", "runs/sasrec-yaml/config.yaml", "--out",
                 "runs/sasrec-again", "--no-monitor", "--json"]) == 0
    (name, cfg, margs, _), (name2, cfg2, margs2, _) = captured.calls
    # config.yaml holds matmul_precision as "auto" resolved on this machine (what the run used)
    resolved = resolve_matmul_precision(cfg.matmul_precision, resolve_device(cfg.device).type,
                                        cpu_bf16=model_class("sasrec").cpu_bf16)
    assert cfg.matmul_precision == "auto" and cfg2.matmul_precision == resolved
    assert name == name2 == "sasrec"
    assert dataclasses.replace(cfg, matmul_precision=resolved) == cfg2
    assert (cfg.epochs, cfg.patience, cfg.lr) == (30, 2, 5e-4) and margs == {"hidden": 64}
    assert model_class("sasrec").Args(**margs2) == model_class("sasrec").Args(hidden=64)
    capsys.readouterr()

    _write(tmp_path / "study.yaml", _readme_block("```yaml\n", "```"))
    o, plan, extra = _planned(["--config", "study.yaml"], tmp_path)
    assert (o["out"], o["preset"], extra) == ("results/quick", "quick", {"device": "cpu"})
    assert len(plan) == 2 * 3 and {s.protocol for s in plan} == {"strict"}
