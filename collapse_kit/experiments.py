"""Experiment plans for `collapse-kit reproduce` and `quickstart`: which runs, where, and how.

A plan is a list of :class:`RunSpec` (dataset, model, seed, protocol, variant). Each run lives in
``OUT/runs/<dataset>/<name>/s<seed>-<protocol>/`` and is trained by the project's own command,
``collapse-kit train ... --resume``, so finished runs are reused and interrupted ones continue.
ADRec ablations start from the stage-1 checkpoint of the main ADRec run of the same seed (as in
the paper, the variants share the pre-trained embedding), except "w/o pre-train".

This module is part of the CLI's composition root: it trains through adrec's CLI (one
subprocess per run), and imports adrec only to resolve and compare settings: a finished run is
reused only when the config saved in its checkpoint equals the planned one.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MODELS = ("sasrec", "adrec", "diffurec", "dreamrec")
PROTOCOLS = ("strict", "official")

# Training settings per preset (TrainConfig fields passed with --set).
PRESETS = {
    # the paper's schedule: up to 500 epochs per stage, early stopping (eval every 5, patience 4)
    "paper": {},
    # a short schedule for a first look on a laptop CPU (quickstart: about 10 minutes)
    "quick": {"epochs": 30, "patience": 2},
    # a few epochs, for tests and notebook CI
    "tiny": {"epochs": 2, "eval_every": 1, "batch_size": 256},
}

# Table 4 of the paper (and figure 7): ADRec variants as model settings.
ABLATIONS = {
    "w/o warm-up": {"warmup": "false"},
    # paper: "ADRec trained in an end-to-end manner without pre-training" (so no warm-up either)
    "w/o pre-train": {"pretrain": "false", "warmup": "false"},
    # paper: "End-to-end ADRec without the denoising loss"
    "w/o mse": {"pretrain": "false", "warmup": "false", "use_mse": "false"},
    "w/o CAM": {"use_cam": "false"},
    "MLP": {"denoiser": "mlp"},
    "PCGrad": {"pcgrad": "true"},
    "lambda=1e-2": {"lam": "0.01"},
    "lambda=1e-4": {"lam": "0.0001"},
}

FINAL_CHECKPOINT = {"adrec": "best.pt"}

# The paper's Table 2 (HR@20, NDCG@20 in %) for the four models reproduced here.
PAPER_TABLE2 = {
    "ml-100k": {"sasrec": (18.4538, 7.1034), "dreamrec": (3.4395, 1.3339),
                "diffurec": (16.0688, 6.555), "adrec": (22.0699, 9.0028)},
    "baby": {"sasrec": (5.5268, 2.5197), "dreamrec": (0.7648, 0.2777),
             "diffurec": (5.382, 2.5649), "adrec": (7.1524, 3.1455)},
    "beauty": {"sasrec": (15.2038, 7.6509), "dreamrec": (0.6815, 0.2728),
               "diffurec": (13.9102, 7.3326), "adrec": (16.8246, 8.3214)},
    "sports": {"sasrec": (6.4059, 3.344), "dreamrec": (0.7432, 0.2148),
               "diffurec": (6.2174, 3.2067), "adrec": (8.1639, 3.6389)},
    "toys": {"sasrec": (10.7082, 6.0517), "dreamrec": (0.4755, 0.1731),
             "diffurec": (9.859, 5.8508), "adrec": (12.0924, 6.7982)},
}
# The paper's Table 4 (HR@20, NDCG@20 in %) on the five bundled datasets (Yelp is not bundled).
PAPER_TABLE4 = {
    "baby": {"ADRec": (7.1524, 3.1455), "w/o warm-up": (6.7507, 2.9535),
             "w/o pre-train": (4.5217, 2.1488), "w/o mse": (4.0439, 1.9483),
             "w/o CAM": (7.0320, 3.0853), "MLP": (6.8216, 2.8186)},
    "beauty": {"ADRec": (16.8246, 8.3214), "w/o warm-up": (15.7483, 8.1056),
               "w/o pre-train": (13.233, 6.9819), "w/o mse": (12.6733, 6.7209),
               "w/o CAM": (16.0798, 7.9479), "MLP": (16.0738, 8.0568)},
    "ml-100k": {"ADRec": (22.0699, 9.0028), "w/o warm-up": (21.0144, 8.3206),
                "w/o pre-train": (14.835, 5.5249), "w/o mse": (13.2913, 5.3358),
                "w/o CAM": (18.9609, 7.5569), "MLP": (20.0558, 7.8465)},
    "sports": {"ADRec": (8.1639, 3.6389), "w/o warm-up": (7.2156, 3.7413),
               "w/o pre-train": (5.9635, 3.0097), "w/o mse": (5.6443, 2.9709),
               "w/o CAM": (8.0550, 3.5146), "MLP": (7.6604, 3.1831)},
    "toys": {"ADRec": (12.0924, 6.7982), "w/o warm-up": (11.9226, 6.6113),
             "w/o pre-train": (9.3835, 5.4178), "w/o mse": (8.2456, 4.8172),
             "w/o CAM": (12.0264, 6.5298), "MLP": (11.4461, 6.1759)},
}
PAPER_TABLE4_ML100K = PAPER_TABLE4["ml-100k"]
# The paper's Table 5 (embedding metrics of the final item tables), as printed: top-5 singular
# values, singular-value variance, singular-value entropy, covariance entropy, isotropy score,
# KL divergence to a Gaussian (the authors' formulas, docs/metrics.md). Yelp is not bundled.
PAPER_TABLE5_KEYS = ("top5_singular_values", "singular_value_variance", "singular_value_entropy",
                     "covariance_entropy", "isotropy", "kl_to_gaussian")
PAPER_TABLE5 = {
    "baby": {
        "dreamrec": ((80.58, 80.09, 79.91, 79.02, 78.75), 35.29, 4.85, 4.83, 0.51, 0.96),
        "diffurec": ((106.31, 90.62, 85.69, 81.53, 81.36), 66.94, 4.85, 4.82, 0.13, 1.83),
        "sasrec": ((84.74, 79.9, 79.44, 78.92, 78.59), 38.89, 4.85, 4.84, 0.24, 1.09),
        "adrec": ((247.88, 164.0, 145.34, 138.33, 130.06), 1017.59, 4.74, 4.33, 0.02, 10.38),
    },
    "beauty": {
        "dreamrec": ((89.7, 88.48, 88.32, 87.74, 87.62), 33.16, 4.85, 4.84, 0.56, 0.7),
        "diffurec": ((129.98, 116.93, 113.33, 97.61, 97.35), 108.99, 4.84, 4.81, 0.1, 2.25),
        "sasrec": ((128.7, 125.14, 106.41, 97.86, 94.2), 101.55, 4.84, 4.81, 0.09, 2.11),
        "adrec": ((177.19, 159.37, 145.52, 137.74, 126.75), 995.55, 4.76, 4.51, 0.02, 10.37),
    },
    "ml-100k": {
        "dreamrec": ((43.16, 42.64, 42.42, 41.83, 41.47), 33.56, 4.84, 4.78, 0.23, 4.41),
        "diffurec": ((55.42, 49.44, 44.24, 42.55, 41.41), 38.75, 4.83, 4.77, 0.04, 5.15),
        "sasrec": ((47.37, 42.03, 41.78, 41.6, 41.5), 39.33, 4.83, 4.78, 0.11, 4.6),
        "adrec": ((90.91, 82.5, 71.2, 63.54, 53.68), 122.57, 4.8, 4.55, 0.04, 10.43),
    },
    "sports": {
        "dreamrec": ((122.18, 121.81, 121.4, 121.04, 120.88), 33.16, 4.85, 4.85, 0.66, 0.35),
        "diffurec": ((220.33, 182.85, 172.72, 151.13, 137.7), 347.81, 4.84, 4.79, 0.09, 3.43),
        "sasrec": ((133.91, 125.74, 122.4, 122.0, 120.98), 68.15, 4.85, 4.84, 0.13, 0.81),
        "adrec": ((415.16, 355.94, 317.4, 275.3, 257.72), 433.0, 4.65, 3.97, 0.01, 10.37),
    },
    "toys": {
        "dreamrec": ((109.57, 107.46, 106.19, 104.88, 103.48), 91.02, 4.85, 4.82, 0.4, 1.59),
        "diffurec": ((139.38, 135.46, 117.65, 106.74, 105.77), 138.12, 4.84, 4.81, 0.1, 2.39),
        "sasrec": ((103.28, 97.7, 96.78, 96.15, 95.16), 52.63, 4.85, 4.84, 0.13, 1.03),
        "adrec": ((182.03, 156.4, 148.03, 139.77, 137.68), 1243.76, 4.75, 4.51, 0.01, 10.37),
    },
}


@dataclass
class RunSpec:
    dataset: str
    model: str
    seed: int
    protocol: str = "strict"
    variant: str = ""                         # ablation name ("" = the model itself)
    model_settings: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        if not self.variant:
            return self.model
        slug = (self.variant.replace("w/o ", "no-").replace(" ", "-").replace("/", "-")
                .replace("=", "").lower())
        return f"{self.model}-{slug}"

    @property
    def dataset_key(self) -> str:
        """A folder-safe dataset name: the bundled name, or a data file's stem."""
        return dataset_key(self.dataset)

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.dataset_key / self.name / f"s{self.seed}-{self.protocol}"

    def checkpoint(self, out: Path) -> Path:
        return self.folder(out) / FINAL_CHECKPOINT.get(self.model, f"{self.model}.pt")

    def stage1_source(self, out: Path) -> Path | None:
        """Ablations reuse the main ADRec run's stage-1 checkpoint (same seed, same protocol)."""
        if (self.model != "adrec" or not self.variant
                or self.model_settings.get("pretrain") == "false"):
            return None
        main = RunSpec(self.dataset, "adrec", self.seed, self.protocol)
        return main.folder(out) / "stage1.pt"

    def sets(self, preset: str, extra_sets: dict | None = None) -> dict:
        """The ``--set`` pairs of this run: preset, protocol, variant, then the user's extras."""
        return {**PRESETS[preset], "protocol": self.protocol, **self.model_settings,
                **(extra_sets or {})}

    def settings(self, preset: str, extra_sets: dict | None = None) -> dict:
        """The resolved config and model arguments ``train`` will use (ValueError/TypeError
        for a bad key or value, as ``train`` itself would raise)."""
        import dataclasses

        from adrec.config import TrainConfig, parse_overrides, validate
        from adrec.models import model_class
        from adrec.models.base import check_common_args

        cls = model_class(self.model)
        pairs = [f"{k}={v}" for k, v in self.sets(preset, extra_sets).items()]
        train_over, model_over = parse_overrides(pairs + [f"seed={self.seed}"], TrainConfig,
                                                 cls.Args)
        cfg = validate(TrainConfig(**train_over))
        args = cls.Args(**model_over)
        check_common_args(args)
        return {"config": dataclasses.asdict(cfg), "model_args": dataclasses.asdict(args)}

    def command(self, out: Path, preset: str, extra_sets: dict | None = None, *,
                progress: bool = False) -> list[str]:
        sets = self.sets(preset, extra_sets)
        cmd = [sys.executable, "-m", "collapse_kit.cli", "train", "--model", self.model,
               "--dataset", self.dataset, "--seed", str(self.seed),
               "--out", str(self.folder(out)), "--resume", "--json"]
        if not progress:
            cmd.append("--no-progress")
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        src = self.stage1_source(out)
        if src is not None:
            cmd += ["--stage1", str(src)]
        return cmd


def dataset_key(dataset: str) -> str:
    name = Path(dataset).name
    return name.split(".")[0] if ("/" in dataset or "." in name) else dataset


def ablation_variants(names) -> list[str]:
    """The Table 4 variants named by ``names`` (paper names such as ``w/o warm-up`` or their
    folder names such as ``no-warm-up``), in ``ABLATIONS`` order; True or an empty list = all."""
    if names is True or len(names) == 0:
        return list(ABLATIONS)
    slugs = {RunSpec("", "adrec", 0, variant=v).name.removeprefix("adrec-"): v
             for v in ABLATIONS}
    picked = set()
    for n in names:
        v = n if n in ABLATIONS else slugs.get(n.removeprefix("adrec-"))
        if v is None:
            raise ValueError(f"unknown ablation {n!r}; choose from "
                             + ", ".join(f"{v!r} ({slug})" for slug, v in slugs.items()))
        picked.add(v)
    return [v for v in ABLATIONS if v in picked]


def plan_runs(datasets, models, seeds: int, *, ablations=False,
              ablation_seeds: int = 1, protocols=PROTOCOLS) -> list[RunSpec]:
    """Every run of a reproduction: models x datasets x seeds x protocols, then ablations
    (ADRec variants, strict protocol, seeds 0..ablation_seeds-1, on each dataset).
    ``ablations``: False/None (none), True or [] (all of ``ABLATIONS``), or a list of variant
    names (see ``ablation_variants``)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    plan = [RunSpec(d, m, s, p) for d in datasets for p in protocols for m in models
            for s in range(seeds)]
    if ablations not in (False, None):
        variants = ablation_variants(ablations)
        if "adrec" not in models:
            raise ValueError("--ablations needs adrec among --models (the variants reuse its "
                             "stage-1 checkpoints)")
        if not 1 <= ablation_seeds <= seeds:
            raise ValueError(f"--ablation-seeds must be in [1, --seeds={seeds}], "
                             f"got {ablation_seeds}")
        if "strict" not in protocols:
            raise ValueError("--ablations run under the strict protocol; include it in "
                             "--protocols")
        plan += [RunSpec(d, "adrec", s, "strict", v, dict(ABLATIONS[v]))
                 for d in datasets for v in variants for s in range(ablation_seeds)]
    return plan


def saved_settings_diff(spec: RunSpec, out: Path, preset: str,
                        extra_sets: dict | None = None) -> list[str]:
    """How the finished run of ``spec`` in ``out`` differs from the planned settings
    (``key: saved -> planned``; empty when it may be reused)."""
    from adrec.checkpoint import load_checkpoint
    from adrec.train import settings_diff

    ck = load_checkpoint(spec.checkpoint(out))
    saved = {"config": ck.get("config") or {}, "model_args": ck.get("model_args") or {}}
    return settings_diff(saved, spec.settings(preset, extra_sets))


def check_reuse(plan: list[RunSpec], out: Path, preset: str,
                extra_sets: dict | None = None) -> dict[str, list[str]]:
    """``{folder: differences}`` for every finished run of ``plan`` whose saved settings differ
    from the planned ones (such a run is neither reused nor overwritten)."""
    refused = {}
    for spec in plan:
        if spec.checkpoint(out).exists():
            diffs = saved_settings_diff(spec, out, preset, extra_sets)
            if diffs:
                refused[str(spec.folder(out))] = diffs
    return refused


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


def run_plan(plan: list[RunSpec], out: Path, preset: str, *, jobs: int = 1,
             extra_sets: dict | None = None, log=print, timeout: float | None = None,
             progress: bool = False) -> dict:
    """Train every run whose final checkpoint is missing, ``jobs`` at a time (subprocesses of
    ``collapse-kit train --resume``). Returns {folder: "reused" | "trained" | "refused: ..." |
    "failed: ..."}. A finished run is reused only when its saved settings equal the planned
    ones; otherwise it is "refused" (kept as it is, not retrained). SIGTERM or Ctrl-C ends the
    running children too (they resume later from their last state).

    With ``progress`` (one job at a time) each run's progress bars go to this stderr; its
    stdout (the JSON result line) goes to ``train.out`` in its folder."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    status, pending, running = {}, [], {}
    for spec in plan:
        if spec.checkpoint(out).exists():
            diffs = saved_settings_diff(spec, out, preset, extra_sets)
            status[str(spec.folder(out))] = (
                f"refused: trained with other settings ({'; '.join(diffs)})" if diffs
                else "reused")
        else:
            pending.append(spec)
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        return _run_pending(pending, running, status, out, preset, jobs=jobs,
                            extra_sets=extra_sets, log=log, timeout=timeout, progress=progress)
    except (_Terminated, KeyboardInterrupt):
        for _, (proc, _, _) in running.values():
            proc.terminate()
        for _, (proc, _, _) in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise KeyboardInterrupt from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run_pending(pending, running, status, out, preset, *, jobs, extra_sets, log, timeout,
                 progress) -> dict:
    n_total, t_start = len(pending), time.time()
    reused = sum(v == "reused" for v in status.values())
    for folder, why in status.items():
        if why.startswith("refused"):
            log(f"  REFUSED {folder}: {why[len('refused: '):]}")
    if pending:
        log(f"training {n_total} run(s), {jobs} at a time ({reused} reused)")
    while pending or running:
        for spec in list(pending):
            if len(running) >= jobs:
                break
            src = spec.stage1_source(out)
            if src is not None and not src.exists():
                main_busy = any(r.model == "adrec" and not r.variant and r.seed == spec.seed
                                and r.dataset == spec.dataset for r in list(pending) +
                                [s for s, _ in running.values()])
                if main_busy:
                    continue  # wait for the main run's stage 1
            pending.remove(spec)
            folder = spec.folder(out)
            folder.mkdir(parents=True, exist_ok=True)
            logf = open(folder / "train.out", "a")
            show = progress and jobs == 1
            proc = subprocess.Popen(spec.command(out, preset, extra_sets, progress=show),
                                    stdout=logf, stderr=None if show else subprocess.STDOUT)
            if show:
                log(f"  start {spec.dataset_key} {spec.name} seed {spec.seed} {spec.protocol}")
            running[proc.pid] = (spec, (proc, logf, time.time()))
        time.sleep(0.5)
        for pid, (spec, (proc, logf, t0)) in list(running.items()):
            if timeout is not None and time.time() - t_start > timeout and proc.poll() is None:
                proc.terminate()
            if proc.poll() is None:
                continue
            logf.close()
            del running[pid]
            key = str(spec.folder(out))
            if proc.returncode == 0 and spec.checkpoint(out).exists():
                status[key] = "trained"
                log(f"  done  {spec.dataset} {spec.name} seed {spec.seed} {spec.protocol} "
                    f"({time.time() - t0:.0f} s; {sum(v == 'trained' for v in status.values())}"
                    f"/{n_total})")
            else:
                tail = (spec.folder(out) / "train.out").read_text().strip().splitlines()[-1:]
                status[key] = f"failed: {tail[0] if tail else f'exit code {proc.returncode}'}"
                log(f"  FAILED {spec.dataset} {spec.name} seed {spec.seed}: {status[key]}")
        if not running and pending and all(
                s.stage1_source(out) is not None and not s.stage1_source(out).exists()
                for s in pending):
            for s in pending:  # their main run failed: nothing can start them
                status[str(s.folder(out))] = "failed: main ADRec run has no stage1.pt"
            pending.clear()
    return status


def run_metrics(spec: RunSpec, out: Path, stage: str | None = None) -> dict | None:
    """The metrics a finished run stored in its checkpoint (None if it has none).

    ``stage`` reads another checkpoint of the run (e.g. "stage1" of an ADRec run: the stage-1
    model on its own); its time is then that stage's log only.
    """
    from adrec.checkpoint import load_checkpoint
    from adrec.train import read_log

    path = spec.checkpoint(out) if stage is None else spec.folder(out) / f"{stage}.pt"
    if not path.exists():
        return None
    ck = load_checkpoint(path)
    m = dict(ck.get("metrics", {}))
    m["epochs"] = ck.get("epoch")
    m["trained_on"] = ck.get("trained_on", "unknown")
    times = []
    pattern = "*.log.jsonl" if stage is None else f"{stage}.log.jsonl"
    for log_path in spec.folder(out).glob(pattern):
        rows = read_log(log_path)
        times.append(sum(r.get("seconds", 0) + r.get("eval_seconds", 0) for r in rows))
    m["wall_seconds"] = sum(times)
    return m
