"""Typed training configuration, presets, ADRec's ablations and checked ``key=value`` overrides.

Model hyper-parameters live in each model's own ``Args`` dataclass (adrec/models/*.py); the
training loop's live here. ``apply_overrides`` routes each ``key=value`` to whichever of the two
declares ``key`` and converts the value to the field's type; unknown keys are errors. A config
file (``--config FILE``, YAML) holds the same settings as ``key: value`` lines, read with the same
checks (``read_config_file``, ``file_settings``); ``config_yaml`` writes a run's settings in that
form.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHOICES = {
    "protocol": ("strict", "official"),
    "batching": ("bucket", "bucket-constant", "random"),
    "attention_mask": ("correct", "official"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "matmul_precision": ("highest", "high", "medium", "auto"),
}


@dataclass
class TrainConfig:
    epochs: int = 500            # maximum epochs per stage (early stopping normally ends sooner)
    batch_size: int = 512        # sequences per batch (one optimizer step)
    micro_batch: int = 0         # sequences per forward/backward pass, gradients accumulated to
                                 # the same step; 0 = auto: on CPU about 3,200 (row x position)
                                 # cells per pass (64 rows of width 50), the whole batch on GPU
    lr: float = 1e-3             # Adam learning rate
    weight_decay: float = 1e-5   # coupled L2 (torch Adam weight_decay), as the authors
    cosine_t_max: int = 500      # CosineAnnealingLR period in epochs, stepped once per epoch
    eval_every: int = 5          # validate every N epochs (and after the last epoch)
    patience: int = 4            # stop after this many evaluations without improvement
    protocol: str = "strict"     # evaluation protocol for selection: strict | official
    max_len: int = 50            # history window
    seed: int = 0                # seeds init, batching, dropout, diffusion noise and evaluation
    batching: str = "random"     # random: a uniform shuffle of the users every epoch (the
                                 # authors' loader); bucket: length-bucketed, trimmed batches,
                                 # an opt-in for speed experiments only: it re-weights the loss
                                 # towards short users (Baby SASRec+ seed 0: test NDCG@20 1.92
                                 # bucketed vs 2.51 random); bucket-constant: bucketed, but
                                 # every batch's loss divided by the epoch's mean batch totals
                                 # (an experiment: results/batching-constant-totals)
    device: str = "auto"         # auto = cuda if available, else cpu
    warmup_epochs: int = 5       # ADRec stage 2 length (embedding frozen)
    resume_seconds: float = 30.0  # write the resume state after the first epoch, then after an
                                 # epoch only when this many seconds have passed since the last
                                 # write (a kill loses at most about this much training); 0 =
                                 # after every epoch
    matmul_precision: str = "auto"  # the training passes' matrix products (every evaluation
                                 # is float32): "auto" = bfloat16 on a CPU with bfloat16 units
                                 # (avx512_bf16 / amx_bf16), TF32 on CUDA GPUs, float32
                                 # elsewhere (resolve_matmul_precision; checkpoints record what
                                 # it resolved to); "highest" = float32 everywhere; "medium" =
                                 # bfloat16 (bf16_products on a CPU); "high" = TF32 on GPUs


# Training schedules by name (TrainConfig fields), as ``collapse-kit reproduce --preset`` uses them.
PRESETS: dict[str, dict[str, Any]] = {
    # the paper's schedule: up to 500 epochs per stage, early stopping (eval every 5, patience 4)
    "paper": {},
    # a short schedule for a first look on a laptop CPU (`quickstart --preset quick`)
    "quick": {"epochs": 30, "patience": 2},
    # a few epochs, for tests and notebook CI
    "tiny": {"epochs": 2, "eval_every": 1, "batch_size": 256},
}

# The paper's Table 4 (and figure 7): ADRec variants as typed ADRec.Args values.
ABLATIONS: dict[str, dict[str, Any]] = {
    "w/o warm-up": {"warmup": False},
    # paper: "ADRec trained in an end-to-end manner without pre-training" (so no warm-up either)
    "w/o pre-train": {"pretrain": False, "warmup": False},
    # paper: "End-to-end ADRec without the denoising loss"
    "w/o mse": {"pretrain": False, "warmup": False, "use_mse": False},
    "w/o CAM": {"use_cam": False},
    "MLP": {"denoiser": "mlp"},
    "PCGrad": {"pcgrad": True},
    "lambda=1e-2": {"lam": 0.01},
    "lambda=1e-4": {"lam": 0.0001},
}


def setting_text(value: Any) -> str:
    """A typed setting as a ``--set key=VALUE`` string that ``parse_overrides`` reads back to
    the same value (booleans as ``true`` / ``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bfloat16 matrix units


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_matmul_precision(precision: str, device_type: str,
                             flags: frozenset[str] | None = None, *, cpu_bf16: bool) -> str:
    """What ``matmul_precision="auto"`` means on ``device_type`` ("cpu", "cuda", "mps") for a
    model whose ``Recommender.cpu_bf16`` is ``cpu_bf16``; any other value is returned as it is.

    ``auto``: "high" (TF32) on CUDA GPUs, as the authors' code sets; "medium" (bfloat16 products)
    on a CPU with bfloat16 matrix units (``flags`` holds ``avx512_bf16`` or ``amx_bf16``; default
    ``cpu_flags()``: detected, never assumed) for a model with ``cpu_bf16`` (measured faster
    there: SASRec+, ADRec and its stage 1; accuracy checked over 3 seeds for ADRec and its
    stage 1, over one for SASRec+, which is stage 1 with positions); plain float32 ("highest")
    everywhere else, where a lower precision would round without running faster (DiffuRec and
    DreamRec ran slower with bfloat16 products on the CPU).
    """
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "high"
    if device_type == "cpu" and cpu_bf16:
        flags = cpu_flags() if flags is None else flags
        if any(f in flags for f in BF16_CPU_FLAGS):
            return "medium"
    return "highest"


def with_resolved_precision(cfg: TrainConfig, device_type: str, *, cpu_bf16: bool
                            ) -> TrainConfig:
    """``cfg`` with ``matmul_precision`` as it resolves on ``device_type`` for a model with
    ``cpu_bf16`` (``Recommender.cpu_bf16``): what a stage trains at, and what its checkpoint and
    the run's config.yaml record instead of "auto"."""
    return dataclasses.replace(cfg, matmul_precision=resolve_matmul_precision(
        cfg.matmul_precision, device_type, cpu_bf16=cpu_bf16))


@contextlib.contextmanager
def matmul_precision(precision: str):
    """``torch.set_float32_matmul_precision(precision)`` inside the block, restored after it.

    The trainer trains under ``TrainConfig.matmul_precision``; every evaluation
    (``adrec.evaluate.compute_ranks_all``) runs under "highest"."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


BF16_ROW_MULTIPLE = 64  # CPU bfloat16 products: Linear inputs padded to a multiple of these rows


def bf16_products(precision: str, device_type: str):
    """The forward pass's context for ``precision`` (resolved) on ``device_type``.

    On a CPU, ``"medium"`` means bfloat16 matrix products: ``torch.autocast("cpu",
    dtype=torch.bfloat16)`` around the training forward (its backward then runs in the same
    types), so every Linear / bmm / SDPA multiplies bfloat16 operands and accumulates in
    float32, while parameters, optimizer state, the item softmax's cross-entropy and the MSE
    stay float32 (and the project's dropout scales in float32, ``layers.Dropout``; the FFN's
    hidden dropout, whose output only feeds a product, keeps bfloat16 with the values that
    product would round to). Inside it,
    the rows of every 2-D Linear input are padded with zeros to a multiple of
    ``BF16_ROW_MULTIPLE`` and cut off after the product (``_padded_rows_mode``): the CPU's
    bfloat16 kernels are built per matrix shape, and packed passes give a new row count almost
    every pass (benchmarks/bench_matmul_precision.md, section 4). A CPU without bfloat16 units
    still rounds to bfloat16 here, only slower; ``auto`` does not pick ``medium`` there.

    ``torch.set_float32_matmul_precision("medium")`` alone does not do this on a CPU: with
    torch 2.13 on the AVX512-BF16 development machine its float32 products came out
    bit-identical to "highest". Everywhere else (GPUs, other precisions) a no-op:
    ``matmul_precision`` sets the precision there.
    """
    if precision == "medium" and device_type == "cpu":
        return _cpu_bf16()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _cpu_bf16():
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16), _padded_rows_mode()():
        yield


@functools.lru_cache(maxsize=1)
def _padded_rows_mode():
    """The TorchFunctionMode class that pads 2-D Linear inputs (built once, torch imported
    lazily)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class PaddedRows(TorchFunctionMode):
        """``F.linear(x, W, b)`` of a 2-D ``x`` as ``F.linear(pad(x), W, b)[:rows]``: the same
        rows (each output row depends on its input row only), at row counts that repeat."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.linear and args and isinstance(args[0], torch.Tensor) \
                    and args[0].dim() == 2:
                rows = args[0].shape[0]
                extra = -rows % BF16_ROW_MULTIPLE
                if extra:
                    x = F.pad(args[0], (0, 0, 0, extra))
                    return func(x, *args[1:], **kwargs)[:rows]
            return func(*args, **kwargs)

    return PaddedRows


def _convert(value: str, target_type, key: str, *, label: str | None = None):
    """``value`` (text) as ``target_type``; errors start with ``label`` (default
    ``--set key=value``; a config file passes ``FILE:LINE: key=value``)."""
    label = label or f"--set {key}={value}"
    if target_type is bool or isinstance(target_type, bool):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise TypeError(f"{label}: expected true or false")
    if target_type is int:
        try:
            return int(value)
        except ValueError:
            raise TypeError(f"{label}: expected an integer") from None
    if target_type is float:
        try:
            number = float(value)
        except ValueError:
            raise TypeError(f"{label}: expected a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{label}: expected a finite number")
        return number
    if target_type is str:
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"{label}: choose one of {', '.join(CHOICES[key])}")
        return value
    raise TypeError(f"{label}: unsupported field type {target_type}")


def _field_types(obj_or_cls) -> dict[str, Any]:
    hints = {}
    for f in dataclasses.fields(obj_or_cls):
        t = f.type
        if isinstance(t, str):  # postponed annotations
            t = {"int": int, "float": float, "bool": bool, "str": str}.get(t, str)
        hints[f.name] = t
    return hints


def parse_overrides(pairs: list[str] | None, *configs) -> list[dict[str, Any]]:
    """Parse ``key=value`` strings against dataclass types ``configs``; one dict per config.

    A key goes to every config that declares it (``max_len`` is both the trainer's history window
    and the size of a model's position table). Raises on malformed pairs, unknown keys and values
    of the wrong type or non-finite numbers.
    """
    def settings():
        for pair in pairs or []:
            if "=" not in pair:
                raise ValueError(f"--set expects key=value, got {pair!r}")
            key, value = (part.strip() for part in pair.split("=", 1))
            yield (key, lambda t, key=key, value=value: _convert(value, t, key),
                   f"unknown --set key {key!r}")

    return _route(settings(), configs)


def _route(settings, configs) -> list[dict[str, Any]]:
    """One dict per dataclass type of ``configs``: each ``(key, convert, unknown)`` of
    ``settings`` goes, as ``convert(field type)``, to every config that declares ``key``; a key
    no config declares raises ValueError ``unknown`` + the valid keys."""
    out: list[dict[str, Any]] = [{} for _ in configs]
    types = [_field_types(c) for c in configs]
    for key, convert, unknown in settings:
        owners = [i for i, t in enumerate(types) if key in t]
        if not owners:
            known = sorted(set().union(*types))
            raise ValueError(f"{unknown}; valid keys: {', '.join(known)}")
        for i in owners:
            out[i][key] = convert(types[i][key])
    return out


# -------------------------------------------------------------------------------------------
# Config files: the ``--set`` settings as a YAML mapping, one ``key: value`` per line. The file is
# only composed into YAML nodes (PyYAML's safe loader; no object is ever constructed), so every
# value keeps its line and its text, and converts exactly as ``--set key=TEXT`` would.

_YAML = "tag:yaml.org,2002:"
_PLAIN_TAGS = tuple(_YAML + t for t in ("null", "bool", "int", "float", "str"))
_TAGS = _PLAIN_TAGS + (_YAML + "seq", _YAML + "map")
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number"}


@dataclass(frozen=True)
class FileEntry:
    """One ``key: value`` of a config file: the key, its value as a YAML node (not yet
    converted), the file and the key's line (1-based)."""
    key: str
    node: Any
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_config_file(path: str | Path) -> dict[str, FileEntry]:
    """The top-level ``key: value`` entries of the YAML file ``path``, in file order (an empty
    file has none).

    Raises ValueError naming the file, and the line where there is one, for a missing or
    unreadable file, text that is not UTF-8, malformed YAML, a document that is not a mapping,
    a key that is not a name, and a key given twice.
    """
    import yaml

    path = str(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{where}: not valid YAML ({' '.join(problem.split())})") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{path}:{root.start_mark.line + 1}: expected `key: value` lines (a "
                         f"YAML mapping), got {_node_kind(root)}")
    return _entries(root, path)


def _entries(node, path: str) -> dict[str, FileEntry]:
    """The entries of the YAML mapping ``node`` (keys must be names, each given once)."""
    import yaml

    entries: dict[str, FileEntry] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _YAML + "str":
            raise ValueError(f"{path}:{line}: a key must be a setting's name, got "
                             f"{_node_kind(key_node)}")
        key = key_node.value
        if key in entries:
            raise ValueError(f"{path}:{line}: {key!r} is given twice (first on line "
                             f"{entries[key].line})")
        entries[key] = FileEntry(key, value_node, path, line)
    return entries


def _node_kind(node) -> str:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return repr(node.value)


def file_value(entry: FileEntry, target_type, *, node=None):
    """The value of ``entry`` (or ``node``, one item of its list) as ``target_type`` (bool, int,
    float or str), with the checks and conversions of ``--set key=TEXT``; a quoted value of a
    bool or number field is an error. Errors start with ``FILE:LINE: key``."""
    import yaml

    where = entry.where if node is None else f"{entry.path}:{node.start_mark.line + 1}"
    node = _plain(entry, entry.node if node is None else node, where)
    if not isinstance(node, yaml.ScalarNode):
        raise TypeError(f"{where}: {entry.key}: expected one value, got {_node_kind(node)}")
    if node.tag == _YAML + "null" and node.style is None:
        raise TypeError(f"{where}: {entry.key}: no value given")
    label = f"{where}: {entry.key}={node.value}"
    if node.style in ("'", '"') and target_type in _EXPECTED:
        raise TypeError(f"{label}: expected {_EXPECTED[target_type]}, got quoted text (drop "
                        "the quotes)")
    return _convert(node.value, target_type, entry.key, label=label)


def _plain(entry: FileEntry, node, where: str):
    """``node``, refused when it has a tag other than YAML's plain ones (``!!python/...``)."""
    if node.tag not in _TAGS:
        raise TypeError(f"{where}: {entry.key}: unsupported YAML tag {node.tag}; give a plain "
                        "value")
    return node


def file_values(entry: FileEntry, item_type) -> list:
    """The value of ``entry`` as a list of ``item_type``: a YAML list, or one value."""
    import yaml

    if isinstance(_plain(entry, entry.node, entry.where), yaml.SequenceNode):
        return [file_value(entry, item_type, node=n) for n in entry.node.value]
    return [file_value(entry, item_type)]


def file_mapping(entry: FileEntry) -> dict[str, FileEntry]:
    """The value of ``entry`` as nested ``key: value`` entries (an empty value has none)."""
    import yaml

    if isinstance(_plain(entry, entry.node, entry.where), yaml.MappingNode):
        return _entries(entry.node, entry.path)
    if isinstance(entry.node, yaml.ScalarNode) and entry.node.tag == _YAML + "null":
        return {}
    raise TypeError(f"{entry.where}: {entry.key}: expected indented `key: value` lines, got "
                    f"{_node_kind(entry.node)}")


def file_settings(entries, *configs, context: str = "") -> list[dict[str, Any]]:
    """``parse_overrides`` for config-file entries: one dict per dataclass type of ``configs``;
    a key goes to every config that declares it. Unknown keys and values of the wrong type are
    errors naming the key, the file and the line (``context`` follows the key in the unknown-key
    error, e.g. " (in set:, for model sasrec)")."""
    return _route(((e.key, lambda t, e=e: file_value(e, t),
                    f"{e.where}: unknown key {e.key!r}{context}") for e in entries), configs)


def config_yaml(model: str, dataset: str, cfg: TrainConfig, args, *,
                stage1: str | None = None) -> str:
    """A run's settings as the config file ``collapse-kit train --config`` reads back to the
    same ``model``, ``dataset`` (and ``stage1`` checkpoint), ``cfg`` and model ``args``.

    Every field is written, defaults included, so a later change of a default does not change
    a repeated run: the TrainConfig fields, then the model's Args fields; a key both declare
    (``max_len``) once, as ``--set`` gives both the same value (ValueError if they differ).
    """
    import yaml

    train, model_args = dataclasses.asdict(cfg), dataclasses.asdict(args)
    differ = sorted(k for k in set(train) & set(model_args) if train[k] != model_args[k])
    if differ:
        raise ValueError(f"the trainer and the model disagree on {', '.join(differ)}; a config "
                         "file gives both one value")
    run = {"model": model, "dataset": str(dataset)}
    if stage1 is not None:
        run["stage1"] = str(stage1)

    def block(values: dict) -> str:
        return yaml.safe_dump(values, sort_keys=False, default_flow_style=False,
                              allow_unicode=True, width=1000)

    return ("# `collapse-kit train --config THIS_FILE --out NEW_FOLDER` repeats this run; "
            "--set KEY=VALUE overrides a line\n"
            + block(run) + "# training: adrec.config.TrainConfig\n" + block(train)
            + f"# model: {type(args).__name__}\n"
            + block({k: v for k, v in model_args.items() if k not in train}))


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check ``cfg`` before a run starts (raises ValueError naming the key, value and range)."""
    check_finite(cfg)
    for key, choices in CHOICES.items():
        if hasattr(cfg, key) and getattr(cfg, key) not in choices:
            raise ValueError(f"{key}={getattr(cfg, key)!r}: choose one of {', '.join(choices)}")
    for key in ("epochs", "batch_size", "eval_every", "max_len", "cosine_t_max"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.micro_batch < 0:
        raise ValueError(f"micro_batch must be >= 0 (0 = auto), got {cfg.micro_batch}")
    if cfg.lr <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.resume_seconds < 0:
        raise ValueError(f"resume_seconds must be >= 0 (0 = every epoch), got {cfg.resume_seconds}")
    if cfg.patience < 1:
        raise ValueError(f"patience must be >= 1, got {cfg.patience}")
    if cfg.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if cfg.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    return cfg


def check_finite(obj) -> None:
    """Every float field of the dataclass ``obj`` is finite (NaN passes ``x <= 0`` checks)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}={value}: expected a finite number")
