"""The checkpoint format: the only contract between the trainer and the analyzers.

A checkpoint is a plain dict of tensors and primitives, loadable with
``torch.load(path, weights_only=True)`` (no pickled objects):

=================  ======================================================================
format             "collapse-kit-checkpoint"
format_version     1
package_version    version of collapse-kit that wrote it
model              registry name ("sasrec", "stage1", "adrec", ...)
model_args         the model's Args dataclass as a dict
config             the resolved TrainConfig as a dict
dataset            {"name", "n_items", "n_users", "fingerprint"}, and "item_ids" (the raw
                   log's id of item i at index i - 1) for data built from an interaction log
stage              the stage that wrote it: "stage1" | "stage2" | "stage3" (ADRec's stages),
                   "best" (ADRec's best.pt: the stage-3 model, with "stages" in its metrics),
                   or the model name for a one-stage model ("sasrec", "diffurec", ...)
parent             None or {"path", "stage", "sha256"} of the checkpoint this one started from
metrics            {"selection_protocol", "best_epoch", "strict": {"valid", "test"},
                   "official": {"valid", "test"}, "train_seconds", "eval_seconds",
                   "world_size"}; each "valid"/"test" maps HR@k / NDCG@k (k = 5, 10, 20) to
                   percent; best.pt adds "stages": {stage: {"epochs", "train_seconds",
                   "eval_seconds", ...}}
epoch              epochs trained in this stage
trained_on         the device, e.g. "NVIDIA H200" or "CPU (2 cores, x86_64)"
torch_version      the torch that wrote it
item_embeddings    float32 (n_items, D), the item table WITHOUT the padding row
state_dict         the model's state dict (uncompiled module names)
weights_stripped   optional, True: ``state_dict`` emptied for transport (``strip_weights``);
                   metrics and table usable, the model cannot be evaluated again
table_stripped     optional, True: ``item_embeddings`` replaced by an empty (0, D) tensor
                   (``scripts/pack_runs.py``); readers must refuse to analyse it
test_ranks         optional (written by the trainer since 2026-12-06): int32 (n_users,), the
                   strict rank of each test user's target at the saved weights (noise seed =
                   config seed); kept by ``strip_weights``, so light runs can still be compared
                   user by user (``collapse_kit.paired``)
=================  ======================================================================

``collapse_kit.io`` reads this format without importing ``adrec`` (it keeps its own copies of
``FORMAT``, ``FORMAT_VERSION`` and the table key; ``tests/test_checkpoint.py`` checks that they
equal these, and that this table lists exactly the keys ``make_checkpoint`` writes).

Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from adrec import __version__

FORMAT = "collapse-kit-checkpoint"
FORMAT_VERSION = 1
TABLE_KEY = "item_embeddings"
OPTIONAL = ("weights_stripped", "table_stripped", "test_ranks")
REQUIRED = ("format", "format_version", "model", "model_args", "dataset", "state_dict",
            "item_embeddings")


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    The file is fsynced before the rename and the folder after it, so a power cut leaves the old
    file or the new one; it gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def non_finite_tensors(state_dict: dict) -> list[str]:
    """Names of the dense floating-point tensors of ``state_dict`` holding NaN or infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and _unusable_kind(v) is None
            and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def device_description(device=None) -> str:
    """What a run trained on, e.g. 'NVIDIA H200' or 'CPU (2 cores, x86_64)'."""
    import os
    import platform

    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def _model_device(model):
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else None


def make_checkpoint(model, *, dataset: dict, config, stage: str, epoch: int,
                    metrics: dict | None = None, parent: dict | None = None,
                    trained_on: str | None = None, test_ranks=None) -> dict:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    extra = {} if test_ranks is None else {
        "test_ranks": torch.as_tensor(test_ranks, dtype=torch.int32).contiguous()}
    return {
        **extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": model.name,
        "model_args": dataclasses.asdict(model.args),
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "dataset": dict(dataset),
        "stage": stage,
        "parent": parent,
        "metrics": metrics or {},
        "epoch": int(epoch),
        "trained_on": trained_on or device_description(_model_device(model)),
        "torch_version": str(torch.__version__),
        TABLE_KEY: model.item_embeddings().detach().cpu().float().contiguous(),
        "state_dict": state,
    }


def sniff_foreign(path: Path) -> str | None:
    """What ``path`` is when its first bytes show it is not a PyTorch file (None when it may
    be one: a zip archive or a legacy pickle stream)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file (decompress it first)"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array (`collapse-kit analyze` reads tables in that format)"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file (`collapse-kit analyze` reads it)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a file of an unknown format"
    return "a text file"


def safe_load(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU with one-line errors for every failure mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such checkpoint file", str(path))
    if path.is_dir():
        raise IsADirectoryError(21, "Is a folder, not a checkpoint file", str(path))
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a pipe or device?); give a checkpoint "
                         "file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a checkpoint; an interrupted copy?")
    kind = sniff_foreign(path)
    if kind:
        raise ValueError(f"{path} is {kind}, not a PyTorch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} contains pickled Python objects that could run code; refusing "
                         f"to load it ({str(exc).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, IndexError, ValueError,
            KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): "
                         f"{str(exc).splitlines()[0][:160]}") from None


def load_checkpoint(path: str | Path) -> dict:
    """Load and validate a collapse-kit checkpoint (raises ValueError naming what is wrong)."""
    return checked_checkpoint(safe_load(path), path)


def checked_checkpoint(ckpt, path: str | Path) -> dict:
    """``load_checkpoint``'s checks on what ``safe_load(path)`` already returned (for readers
    that first look at the file's kind, so that it is read from disk once)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a collapse-kit checkpoint; to evaluate the authors' "
                         "stage-1 state dict use `collapse-kit evaluate PATH --model stage1 "
                         "--dataset NAME`")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is missing fields {missing}; it is damaged or from another tool")
    kinds = {"model_args": dict, "dataset": dict, "state_dict": dict, "config": (dict, type(None)),
             "metrics": (dict, type(None)), "format_version": int, "model": str}
    wrong = [k for k, t in kinds.items() if k in ckpt and not isinstance(ckpt[k], t)]
    if not isinstance(ckpt["item_embeddings"], torch.Tensor):
        wrong.append("item_embeddings")
    if wrong:
        raise ValueError(f"{path} has fields of the wrong type ({', '.join(wrong)}); it is "
                         "damaged or from another tool")
    for key in ("config", "metrics"):
        if ckpt.get(key) is None:
            ckpt[key] = {}
    if ckpt["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {ckpt['format_version']}, newer than this "
                         f"collapse-kit ({FORMAT_VERSION}); upgrade collapse-kit")
    return ckpt


def strip_weights(ckpt: dict) -> dict:
    """A copy without the model weights (``state_dict`` emptied, ``weights_stripped`` True).

    What remains (metrics, config, the item table) is all the analyzers need; used to bring
    many runs back from a remote machine. Such a checkpoint cannot be evaluated again.
    """
    light = dict(ckpt)
    light["state_dict"] = {}
    light["weights_stripped"] = True
    return light


def check_has_weights(ckpt: dict, path: str | Path = "checkpoint") -> None:
    if ckpt.get("weights_stripped"):
        hint = "" if ckpt.get("test_ranks") is None else (
            " (it kept each test user's rank: `collapse-kit evaluate CKPT --against CKPT2 "
            "--stored-ranks` compares those)")
        raise ValueError(f"{path} carries no model weights (stripped for transport); its "
                         "metrics and item table are usable, but it cannot be evaluated again"
                         + hint)


def stored_test_ranks(path: str | Path) -> tuple[torch.Tensor, dict]:
    """(test_ranks, dataset) of a checkpoint that kept its per-user test ranks: int32 (n_users,)
    strict ranks at the saved weights (the format table's ``test_ranks``) and the ``dataset``
    entry naming the users they belong to. Weights are not needed, so a light (stripped) run
    works. A checkpoint without them, or whose ranks do not match its data: one ValueError."""
    ckpt = load_checkpoint(path)
    ranks = checked_test_ranks(ckpt, path)
    if ranks is None:
        raise ValueError(f"{path} has no stored per-user test ranks (the trainer writes them "
                         "since 2026-12-06); drop --stored-ranks to rank its users again")
    return ranks, ckpt["dataset"]


def checked_test_ranks(ckpt: dict, source: str | Path) -> torch.Tensor | None:
    """The ``test_ranks`` of an already loaded checkpoint (``source`` names it in the error), or
    None when it has none; ranks that are not one rank >= 1 per user of its data: ValueError."""
    ranks = ckpt.get("test_ranks")
    if ranks is None:
        return None
    n_users = int(ckpt["dataset"]["n_users"])
    if ranks.dim() != 1 or ranks.numel() != n_users or bool((ranks < 1).any()):
        raise ValueError(f"{source}: its test_ranks (shape {tuple(ranks.shape)}) are not one rank "
                         f">= 1 for each of its {n_users} users; the file is damaged")
    return ranks


def model_from_checkpoint(ckpt: dict, *, overrides: dict | None = None):
    """Rebuild the model of a checkpoint and load its weights (shape mismatches are errors)."""
    from adrec.models import build_model

    check_has_weights(ckpt)
    args = {**ckpt["model_args"], **(overrides or {})}
    model = build_model(ckpt["model"], int(ckpt["dataset"]["n_items"]), args)
    load_weights(model, ckpt["state_dict"])
    return model


def _unusable_kind(v) -> str | None:
    if not isinstance(v, torch.Tensor):
        return f"not a tensor but a {type(v).__name__}"
    if v.layout != torch.strided:
        return f"a {str(v.layout).replace('torch.', '')} tensor"
    if v.is_quantized:
        return "a quantized tensor"
    if v.is_meta:
        return "a meta tensor (shape only, no values)"
    return None


def load_weights(model, state_dict: dict) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit model {model.name!r}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}; pick the right --model")
    for k, v in state_dict.items():
        kind = _unusable_kind(v)
        if kind:
            raise ValueError(f"checkpoint tensor {k} is {kind}; this loader needs dense "
                             "floating-point weights (save tensor.to_dense() / .dequantize() / "
                             "real values instead)")
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"checkpoint tensor {k} has shape {tuple(v.shape)} but the model "
                             f"expects {tuple(own[k].shape)}; wrong --dataset or --model?")
    model.load_state_dict(state_dict)
