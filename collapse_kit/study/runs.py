"""Which runs a study holds, where their folders are, and a `Run` that reads one folder once.

A plan is a list of :class:`RunSpec` (dataset, model, seed, protocol, variant). Each run lives in
``OUT/runs/<dataset>/<name>/s<seed>-<protocol>/`` and is trained by the project's own command,
``collapse-kit train ... --resume`` (``study.schedule``), so finished runs are reused and
interrupted ones continue. ADRec ablations start from the stage-1 checkpoint of the main ADRec
run of the same seed (as in the paper, the variants share the pre-trained embedding), except the
end-to-end ones ("w/o pre-train", "w/o mse").

A finished run is reused only when the config saved in its checkpoint equals the planned one
(``check_reuse``). Presets and ablations are typed values of ``adrec.config``.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from adrec.config import ABLATIONS, PRESETS, setting_text
from collapse_kit.errors import UserError

MODELS = ("sasrec", "adrec", "diffurec", "dreamrec")
PROTOCOLS = ("strict", "official")
FINAL_CHECKPOINT = {"adrec": "best.pt"}


@dataclass
class RunSpec:
    dataset: str
    model: str
    seed: int
    protocol: str = "strict"
    variant: str = ""                         # ablation name ("" = the model itself)
    model_settings: dict = field(default_factory=dict)   # typed model arguments of the variant

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
                or self.model_settings.get("pretrain") is False):
            return None
        main = RunSpec(self.dataset, "adrec", self.seed, self.protocol)
        return main.folder(out) / "stage1.pt"

    def sets(self, preset: str, extra_sets: dict | None = None) -> dict[str, str]:
        """The ``--set`` pairs of this run: preset, protocol, variant, then the user's extras."""
        typed = {**PRESETS[preset], "protocol": self.protocol, **self.model_settings}
        return {**{k: setting_text(v) for k, v in typed.items()}, **(extra_sets or {})}

    def settings(self, preset: str, extra_sets: dict | None = None) -> dict:
        """The resolved config and model arguments ``train`` will use (ValueError/TypeError
        for a bad key or value, as ``train`` itself would raise)."""
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
        cmd = [sys.executable, "-m", "collapse_kit.cli", "train", "--model", self.model,
               "--dataset", self.dataset, "--seed", str(self.seed),
               "--out", str(self.folder(out)), "--resume", "--json"]
        if not progress:
            cmd.append("--no-progress")
        for k, v in self.sets(preset, extra_sets).items():
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


def plan_study(datasets, models, seeds: int, *, out: Path, preset: str, sets=(),
               ablations=False, ablation_seeds: int = 1, protocols=PROTOCOLS,
               finished_only: bool = False) -> tuple[list[RunSpec], dict[str, str]]:
    """The checked plan of ``collapse-kit reproduce`` and its ``--set`` pairs as a dict.

    Everything is checked before any run starts (UserError naming the problem): the datasets,
    every ``--set`` against every planned model (adrec's own parser), and the finished runs in
    ``out``, which must have been trained with these settings. ``finished_only`` (report-only)
    keeps the runs whose final checkpoint exists.
    """
    from adrec.data import BUNDLED

    extra = {}
    for pair in sets:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        extra[k.strip()] = v.strip()
    for d in datasets:
        if d not in BUNDLED and not Path(d).exists():
            raise UserError(f"unknown dataset {d!r}: choose from {', '.join(BUNDLED)} or give a "
                            "path")
    plan = plan_runs(datasets, models, seeds, ablations=ablations,
                     ablation_seeds=ablation_seeds, protocols=protocols)
    for spec in plan:  # every --set checked against every model before anything starts
        try:
            spec.settings(preset, extra)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{spec.model}: {exc}") from None
    if finished_only:
        plan = [s for s in plan if s.checkpoint(out).exists()]
        if not plan:
            raise UserError(f"no finished runs in {out}; drop --report-only to train them")
    refused = check_reuse(plan, out, preset, extra)
    if refused:
        folder, diffs = next(iter(refused.items()))
        raise UserError(
            f"{len(refused)} finished run(s) in {out} were trained with other settings than "
            f"--preset {preset} and these --set values, e.g. {folder} ({'; '.join(diffs)})"
            "; give the settings they were trained with, or another --out")
    return plan, extra


# The options of a study, as `collapse-kit reproduce` takes them, and their defaults. A study file
# (``reproduce --config FILE``, YAML) may hold any of them and a ``set:`` mapping of settings.
STUDY_DEFAULTS = {"datasets": ["ml-100k"], "models": list(MODELS), "seeds": 3, "ablations": None,
                  "ablation_seeds": 1, "preset": "paper", "protocols": list(PROTOCOLS),
                  "bootstrap": 200, "out": None}
_STUDY_LISTS = {"datasets": None, "models": MODELS, "protocols": PROTOCOLS}


def study_options(given: dict, config: str | Path | None = None) -> dict:
    """The options of a study (the keys of ``STUDY_DEFAULTS``, and ``sets``).

    Each option is ``given``'s (the flags; None = not given), else the study file ``config``'s,
    else the default. ``sets``: the file's ``set:`` settings as ``key=value`` pairs, then
    ``given["sets"]`` (a later pair of the same key wins, so ``--set`` overrides the file).
    Unknown keys and values of the wrong type are errors naming the key, the file and the line;
    each ``set:`` key is checked against every model of the study, as ``--set`` is.
    """
    from adrec.config import read_config_file

    entries = read_config_file(config) if config is not None else {}
    set_entry = entries.pop("set", None)
    from_file = {key: _study_value(entry) for key, entry in entries.items()}
    options = {key: given[key] if given.get(key) is not None else from_file.get(key, default)
               for key, default in STUDY_DEFAULTS.items()}
    file_sets = [] if set_entry is None else _study_sets(set_entry, options["models"])
    options["sets"] = file_sets + list(given.get("sets") or [])
    return options


def _study_value(entry):
    """The typed value of one study-file entry (UserError naming key, file and line)."""
    from adrec.config import file_value, file_values

    key, where = entry.key, entry.where
    if key not in STUDY_DEFAULTS:
        raise UserError(f"{where}: unknown key {key!r}; a study file holds "
                        f"{', '.join([*STUDY_DEFAULTS, 'set'])} (training settings go under "
                        "set:)")
    if key in _STUDY_LISTS:
        values, choices = file_values(entry, str), _STUDY_LISTS[key]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise UserError(f"{where}: {key}: unknown {bad[0]!r}; choose from "
                            f"{', '.join(choices)}")
        return values
    if key == "ablations":  # true (all of them), false (none) or a list of variant names
        if getattr(entry.node, "tag", "").endswith(":bool"):
            return [] if file_value(entry, bool) else None
        names = file_values(entry, str)  # [] = all of them, as a bare --ablations
        try:
            ablation_variants(names)
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
        return names
    if key in ("preset", "out"):
        value = file_value(entry, str)
        if key == "preset" and value not in PRESETS:
            raise UserError(f"{where}: preset: unknown {value!r}; choose from "
                            f"{', '.join(PRESETS)}")
        return value
    return file_value(entry, int)  # seeds, ablation_seeds, bootstrap


def _study_sets(entry, models) -> list[str]:
    """The ``set:`` mapping as ``key=value`` pairs, each checked against ``TrainConfig`` and the
    Args of every model of the study (unknown models are left to ``plan_runs``)."""
    from adrec.config import TrainConfig, file_mapping, file_settings
    from adrec.models import model_class

    items = list(file_mapping(entry).values())
    for model in [m for m in models if m in MODELS]:
        file_settings(items, TrainConfig, model_class(model).Args,
                      context=f" (in set:, for model {model})")
    # each value's text, as the same --set pair gives it (its type is checked above)
    return [f"{e.key}={e.node.value}" for e in items]


class Run:
    """One finished (or partly finished) run folder, read once.

    Each checkpoint file is loaded at most once (``checkpoint``), and its item table converted
    at most once (``item_table``), however many tables and figures ask for it. ``stage`` names
    another checkpoint of the folder (``"stage1"`` of an ADRec run); None is the run's final
    checkpoint (``RunSpec.checkpoint``).
    """

    def __init__(self, spec: RunSpec, out: Path):
        self.spec = spec
        self.folder = spec.folder(Path(out))
        self.final = spec.checkpoint(Path(out))
        self._checkpoints: dict[Path, dict | None] = {}
        self._tables: dict[Path, object] = {}

    def path(self, stage: str | None = None) -> Path:
        return self.final if stage is None else self.folder / f"{stage}.pt"

    def checkpoint(self, stage: str | None = None) -> dict | None:
        """The loaded checkpoint (None when the file does not exist)."""
        from adrec.checkpoint import load_checkpoint

        path = self.path(stage)
        if path not in self._checkpoints:
            self._checkpoints[path] = load_checkpoint(path) if path.exists() else None
        return self._checkpoints[path]

    def metrics(self, stage: str | None = None) -> dict | None:
        """The metrics stored in the checkpoint, with ``epochs``, ``trained_on``,
        ``matmul_precision`` (the training passes') and ``wall_seconds`` (training and
        validation seconds of the run's logs; of that stage's log only when ``stage`` is
        given). None when the checkpoint does not exist."""
        from adrec.train import read_log

        ck = self.checkpoint(stage)
        if ck is None:
            return None
        m = dict(ck.get("metrics", {}))
        m["epochs"] = ck.get("epoch")
        m["trained_on"] = ck.get("trained_on", "unknown")
        # as resolved on the training machine; checkpoints older than the option trained at
        # plain float32
        m["matmul_precision"] = (ck.get("config") or {}).get("matmul_precision", "highest")
        pattern = "*.log.jsonl" if stage is None else f"{stage}.log.jsonl"
        m["wall_seconds"] = sum(
            sum(r.get("seconds", 0) + r.get("eval_seconds", 0) for r in read_log(log_path))
            for log_path in self.folder.glob(pattern))
        return m

    def has_table(self, stage: str | None = None) -> bool:
        """Whether the checkpoint exists and kept its item table (light checkpoints strip it)."""
        ck = self.checkpoint(stage)
        return ck is not None and not ck.get("table_stripped")

    def item_table(self, stage: str | None = None):
        """The item table (n_items, d) as ``collapse_kit.io`` reads it (padding row dropped)."""
        from collapse_kit.io import checkpoint_table

        path = self.path(stage)
        if path not in self._tables:
            ck = self.checkpoint(stage)
            if ck is None:
                raise FileNotFoundError(2, "No such checkpoint file", str(path))
            self._tables[path] = checkpoint_table(ck, path).table
        return self._tables[path]

    def trajectory(self) -> list[dict]:
        """The collapse records of the run's logs (``collapse_kit.monitor.read_trajectory``)."""
        from collapse_kit.monitor import read_trajectory

        return read_trajectory(self.folder)


def find_runs(out: Path, dataset: str) -> list[Run]:
    """The runs a study folder holds for ``dataset``: every ``OUT/runs/<dataset>/<name>/
    s<seed>-<protocol>`` folder whose name is a model of ``MODELS`` or one of its ablations
    (``ABLATIONS``), in folder order. Other folders are left out."""
    out = Path(out)
    root = out / "runs" / dataset_key(dataset)
    variants = {RunSpec("", "adrec", 0, variant=v).name: v for v in ABLATIONS}
    found = []
    for folder in sorted(root.glob("*/s*-*")):
        name, (seed, _, protocol) = folder.parent.name, folder.name[1:].partition("-")
        if not seed.isdigit() or protocol not in PROTOCOLS:
            continue
        if name in MODELS:
            spec = RunSpec(dataset, name, int(seed), protocol)
        elif name in variants:
            spec = RunSpec(dataset, "adrec", int(seed), protocol, variant=variants[name],
                           model_settings=dict(ABLATIONS[variants[name]]))
        else:
            continue
        found.append(Run(spec, out))
    return found


def run_metrics(spec: RunSpec, out: Path, stage: str | None = None) -> dict | None:
    """``Run(spec, out).metrics(stage)``: the metrics a finished run stored (None if none)."""
    return Run(spec, out).metrics(stage)
