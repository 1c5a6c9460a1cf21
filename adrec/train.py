"""One trainer for every model and stage: seeded, logged, early-stopped, resumable.

``train_stage`` runs one training stage of any model that follows the contract in
``adrec/models/base.py``. Per stage ``S`` it writes into ``out_dir``:

* ``S.log.jsonl``: one JSON object per epoch (losses, lr, seconds, valid metrics when evaluated);
* ``S.resume.pt``: the full training state after a finished epoch (atomic): after the first,
  then at most every ``resume_seconds`` (30 s by default: writing an ADRec state, 18 MB, took
  about 40 ms on the 2-core development machine, where an ML-100K ADRec epoch on an H200 takes
  about 0.22 s), removed when the stage ends; ``resume=True``
  continues from it, re-runs the epochs after it and ends with the same result as an
  uninterrupted run (same seed, CPU);
* ``S.pt``: the self-describing checkpoint of the selected model (adrec/checkpoint.py).

Selection and early stopping follow the protocol (adrec/evaluate.py): validate every
``eval_every`` epochs and after the last one; stop after ``patience`` evaluations without
improvement; the best model is then tested.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from adrec.checkpoint import (atomic_save, device_description, file_sha256, load_checkpoint,
                              make_checkpoint, safe_load)
from adrec import distributed
from adrec.config import TrainConfig, bf16_products, matmul_precision, resolve_matmul_precision, \
    validate, with_resolved_precision
from adrec.data import BatchIterator, SequenceDataset, training_pairs
from adrec.evaluate import (PROTOCOLS, aggregate, best_of, compute_ranks_all, evaluate,
                            improved, ranking_metrics)

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    stage: str
    checkpoint: Path
    metrics: dict          # {"selection_protocol", "best_epoch", "strict": {...}, "official": {...}}
    epochs: int
    train_seconds: float
    eval_seconds: float
    history: list = field(default_factory=list)

    def summary(self, protocol: str = "strict") -> dict:
        return {"valid": self.metrics[protocol]["valid"], "test": self.metrics[protocol]["test"],
                "checkpoint": str(self.checkpoint)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda requested but no CUDA GPU is available; use --set device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def parent_record(path: str | Path | None, stage: str | None = None) -> dict | None:
    if path is None:
        return None
    return {"path": str(path), "stage": stage, "sha256": file_sha256(path)}


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the heap instead of unmapping it (process-wide).

    By default glibc serves every block above 32 MB with a fresh ``mmap`` and returns it on
    ``free``, so each training step page-faults its large activations (logits, FFN outputs)
    back in and the kernel zeroes them: 0.59 s of 5.1 s CPU per ADRec epoch on ML-100K went to
    system time. With the thresholds raised, the same buffers are reused (0.00 s system time).
    Numbers are unchanged; only the allocator's policy differs. The library never calls it (it
    is irreversible and changes the whole process): ``collapse-kit train`` calls it once before
    training. Returns False where it does not apply (not Linux/glibc).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 2**31 - 1)
                    and libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


# Settings that may change between a run and its resumption: they do not change what is trained.
RESUME_EXEMPT = ("resume_seconds",)
# Settings whose planned value "auto" accepts whatever a finished run resolved it to: a study
# planned at the default matmul_precision="auto" reuses runs trained at any precision (each
# report stamps the precision its runs trained at); an explicit value must match.
AUTO_ACCEPTS_ANY = ("matmul_precision",)


def run_settings(model, dataset: SequenceDataset, cfg: TrainConfig, *,
                 parent: dict | None = None) -> dict:
    """What a stage's result depends on: the config (less ``RESUME_EXEMPT``), the model's
    arguments, the data (item count and fingerprint) and the parent checkpoint's sha256."""
    described = dataset.describe()
    return {"config": {k: v for k, v in dataclasses.asdict(cfg).items()
                       if k not in RESUME_EXEMPT},
            "model_args": dataclasses.asdict(model.args),
            "dataset": {k: described.get(k) for k in ("n_items", "fingerprint")},
            "parent": (parent or {}).get("sha256")}


def checkpoint_settings(ckpt: dict) -> dict:
    """:func:`run_settings` as recorded in a finished stage's checkpoint."""
    return {"config": ckpt.get("config") or {}, "model_args": ckpt.get("model_args") or {},
            "dataset": ckpt.get("dataset") or {},
            "parent": (ckpt.get("parent") or {}).get("sha256")}


def settings_diff(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every setting that differs (keys missing on one side, e.g.
    from an older version, are not compared; a current "auto" of ``AUTO_ACCEPTS_ANY`` matches
    any saved value: the trainer itself compares resolved values)."""
    diffs = []
    for section in ("config", "model_args", "dataset"):
        a, b = saved.get(section) or {}, current.get(section) or {}
        diffs += [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b))
                  if k not in RESUME_EXEMPT and a[k] != b[k]
                  and not (k in AUTO_ACCEPTS_ANY and b[k] == "auto")]
    if saved.get("parent") != current.get("parent"):
        short = [str(x)[:12] if x else None for x in (saved.get("parent"), current.get("parent"))]
        diffs.append(f"parent checkpoint sha256: {short[0]} -> {short[1]}")
    return diffs


class SettingsMismatch(ValueError):
    """A run folder holds a run started with other settings than the ones given now."""


def check_same_settings(saved: dict, current: dict, path: Path) -> None:
    diffs = settings_diff(saved, current)
    if diffs:
        raise SettingsMismatch(
            f"{path} was trained with other settings than these ({'; '.join(diffs)}); resume "
            "with the settings it was started with, or give another --out for a new run")


class TrainingDiverged(ValueError):
    """A loss became NaN or infinite: no checkpoint is written for the stage."""


class FolderBusy(OSError):
    """Another process holds a run folder's lock."""


@contextlib.contextmanager
def folder_lock(out_dir: str | Path):
    """Hold an exclusive lock on ``out_dir/.lock`` (``flock``: released when the process ends,
    even by kill -9, so a lock is never stale). A second writer fails at once, naming the pid
    of the holder. Where ``fcntl`` is missing (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderBusy(f"{out_dir} is in use by another training process (pid {holder}); "
                         "wait for it to end or give another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


AUTO_CELLS = 3200  # CPU auto micro-batch: at most this many (row x position) cells per pass
AUTO_TOKENS = None  # ... and at most this many real tokens (None: cells only)


def micro_batch_rows(model, cfg: TrainConfig, device: torch.device, width: int | None = None
                     ) -> int:
    """Rows per forward/backward pass of a batch ``width`` positions wide (0 = the whole batch).

    Gradient accumulation over micro-batches gives the whole batch's gradient (the models
    normalise by the batch's totals, ``Batch.split``) with a fraction of the activation memory,
    and on a CPU the smaller tensors stay in cache. ``micro_batch`` = N fixes N rows; 0 (auto) is
    the whole batch on GPU and about ``AUTO_CELLS`` cells per pass on CPU (64 rows of width 50).
    PCGrad projects the gradients of a whole batch, so a model that uses it always takes the
    whole batch. On a CPU with the auto setting the trainer (``micro_batches``) does not cut
    equal row counts: it uses ``Batch.split_cells``, the same cell budget per pass over
    length-sorted, trimmed rows.
    """
    if getattr(model.args, "pcgrad", False):
        return 0
    if cfg.micro_batch:
        return cfg.micro_batch
    if device.type != "cpu":
        return 0
    return max(1, AUTO_CELLS // (width or cfg.max_len))


def micro_batches(batch, model, cfg: TrainConfig, device: torch.device) -> list:
    """The passes of one optimizer step: ``batch`` cut by ``micro_batch_rows``, except on a CPU
    with the auto setting, where ``Batch.split_cells`` sorts the batch's rows by length and cuts
    passes of about ``AUTO_CELLS`` cells, each trimmed to its longest row (unless the model needs
    the full width). Either way the passes' gradients add up to the whole batch's."""
    rows = micro_batch_rows(model, cfg, device, batch.history.shape[1])
    if rows and not cfg.micro_batch:
        return batch.split_cells(AUTO_CELLS, trim=not model.needs_full_width,
                                 tokens=AUTO_TOKENS)
    return batch.split(rows)


@dataclass
class StageState:
    """What a stage carries from one epoch to the next; saved in the resume file.

    ``to_dict``/``from_dict`` read and write the plain dict the resume file has always held
    (the same keys since the first version), so a run interrupted under older code resumes.
    """
    epoch: int = 0                   # finished epochs
    best_state: dict | None = None   # state dict (CPU copies) of the selected epoch; None
                                     # without selection (the last epoch's model is kept)
    running: dict | None = None      # best valid metrics so far (evaluate.best_of)
    selected: dict | None = None     # valid metrics of the selected epoch
    best_epoch: int = 0              # the selected epoch (0 = none evaluated yet)
    bad: int = 0                     # evaluations since the last improvement (vs. patience)
    stopped: bool = False            # early stopping has ended the stage
    train_seconds: float = 0.0       # summed seconds of the training epochs
    eval_seconds: float = 0.0        # summed seconds of the validation passes

    def to_dict(self) -> dict:
        # not dataclasses.asdict: it would deep-copy best_state on every resume write
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> StageState:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a resume state needs exactly the keys {sorted(names)}, got {got}")
        return cls(**d)


@dataclass
class StagePaths:
    """The files a stage writes into its run folder (see the module docstring)."""
    final: Path    # {stage}.pt: the selected model's checkpoint
    resume: Path   # {stage}.resume.pt: the training state after a finished epoch
    log: Path      # {stage}.log.jsonl: one record per epoch

    @classmethod
    def of(cls, out_dir: str | Path, stage: str) -> StagePaths:
        """The paths of ``stage`` in ``out_dir`` (created if missing)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(out_dir / f"{stage}.pt", out_dir / f"{stage}.resume.pt",
                   out_dir / f"{stage}.log.jsonl")


@dataclass
class EpochRecord:
    losses: dict[str, float]  # each loss the model returns, mean over the epoch's batches
    seconds: float            # wall seconds of the epoch's training passes and steps


def train_epoch(model, batches, optimizer, cfg: TrainConfig, *,
                device: torch.device = torch.device("cpu"),
                info: distributed.DistInfo | None = None, forward=None) -> EpochRecord:
    """One training epoch: an optimizer step per batch of ``batches`` (the trainer's step).

    Each batch is this rank's shard under DDP (``distributed.shard``), cut into the passes of
    ``micro_batches`` whose gradients add up to the batch's; a model with its own ``backward``
    (e.g. PCGrad) back-propagates its losses itself. Matrix products run at
    ``cfg.matmul_precision`` ("auto" resolved for ``device``).

    info: the process group (``distributed.setup``); None = one process.
    forward: maps a pass's batch to the model's losses: ``model`` by default, its
        DistributedDataParallel wrapper under torchrun, or e.g. a compiled ``model.loss`` in a
        benchmark.
    Returns the mean of each loss over ``len(batches)`` batches (summed over ranks) and the
    epoch's seconds.
    """
    info = info or distributed.DistInfo()
    forward = model if forward is None else forward
    model.train()
    t0 = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    precision = resolve_matmul_precision(cfg.matmul_precision, device.type,
                                         cpu_bf16=model.cpu_bf16)
    with matmul_precision(precision):
        for batch in batches:
            batch, weight = distributed.shard(batch, info)
            if batch is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            parts = micro_batches(batch, model, cfg, device)
            for i, part in enumerate(parts):
                # gradients of the micro-batches add up to the batch's; DDP syncs on the last
                sync = not info.enabled or i == len(parts) - 1
                with contextlib.nullcontext() if sync else forward.no_sync():
                    with bf16_products(precision, device.type):
                        losses = forward(part.to(device))
                    if hasattr(model, "backward"):  # a model may do its own (e.g. PCGrad)
                        model.backward(losses)
                    else:
                        loss = losses["loss"] * weight if info.enabled else losses["loss"]
                        loss.backward()
                for k, v in losses.items():  # micro-batch losses are shares: they add up
                    sums[k] = sums.get(k, 0.0) + v.detach()
            optimizer.step()
    seconds = time.perf_counter() - t0
    sums = distributed.sum_across_ranks(sums)  # DDP: a rank's losses are its shares
    return EpochRecord({k: float(v) / len(batches) for k, v in sums.items()}, seconds)


def evaluate_and_select(model, dataset: SequenceDataset, cfg: TrainConfig, state: StageState,
                        *, stage: str, select: bool = True, callbacks=(),
                        device: torch.device = torch.device("cpu")) -> dict:
    """Validate ``model`` after ``state.epoch`` and update the selection and patience in
    ``state``: an improvement (``evaluate.improved`` under ``cfg.protocol``), or every
    evaluation when ``select`` is False, makes this epoch the selected one (its weights copied
    to the CPU when selecting). Returns the items for the epoch's log record: ``valid``,
    ``eval_seconds`` and what the callbacks' ``on_evaluate`` return."""
    t1 = time.perf_counter()
    valid = evaluate(model, dataset, "valid", protocol=cfg.protocol, max_len=cfg.max_len,
                     device=device, seed=cfg.seed)
    items = {"valid": valid, "eval_seconds": round(time.perf_counter() - t1, 4)}
    state.eval_seconds += time.perf_counter() - t1
    for cb in callbacks:
        if hasattr(cb, "on_evaluate"):
            items.update(cb.on_evaluate(model=model, stage=stage, epoch=state.epoch) or {})
    if not select or improved(valid, state.running, cfg.protocol):
        state.best_state = None if not select else copy.deepcopy(
            {k: v.detach().cpu() for k, v in model.state_dict().items()})
        state.selected, state.best_epoch, state.bad = valid, state.epoch, 0
    else:
        state.bad += 1
    state.running = best_of(valid, state.running, cfg.protocol)
    state.stopped = select and state.bad >= cfg.patience
    return items


def save_resume(path: Path, state: StageState, *, model, optimizer, scheduler,
                generator: torch.Generator, device: torch.device, settings: dict) -> None:
    """Write everything a resumed stage needs to continue as if never stopped (atomic)."""
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                 "rng": _rng_state(device), "state": state.to_dict(), "settings": settings},
                path)


def load_resume(path: Path, *, model, optimizer, scheduler, generator: torch.Generator,
                device: torch.device, settings: dict) -> StageState:
    """Restore what :func:`save_resume` wrote into the given objects and the global RNG;
    returns the stage's state. Raises ``SettingsMismatch`` when the run was started with other
    settings, ``ValueError`` when the file is not a resume file of this trainer."""
    saved = safe_load(path)
    if not isinstance(saved, dict) or "state" not in saved:
        raise ValueError(f"{path} is not a resume file of this trainer; delete it to start the "
                         "stage afresh")
    if "settings" in saved:
        check_same_settings(saved["settings"], settings, path)
    else:
        log.warning("%s records no settings (older version): not checked", path)
    try:
        state = StageState.from_dict(saved["state"])
    except ValueError as exc:
        raise ValueError(f"{path} is not a resume file of this trainer ({exc}); delete it to "
                         "start the stage afresh") from None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    generator.set_state(saved["generator"])
    _set_rng_state(saved["rng"], device)
    return state


def finish_stage(model, dataset: SequenceDataset, cfg: TrainConfig, state: StageState,
                 paths: StagePaths, *, stage: str, select: bool, freeze_embedding: bool,
                 parent: dict | None, info: distributed.DistInfo, device: torch.device
                 ) -> StageResult:
    """Load the selected weights, test them under both protocols, write the checkpoint (rank 0)
    and remove the resume file."""
    if select and state.best_state is not None:
        model.load_state_dict(state.best_state)
    t1 = time.perf_counter()
    metrics = {"selection_protocol": cfg.protocol, "best_epoch": state.best_epoch}
    for split in ("valid", "test"):  # both protocols from one scoring pass per split
        ranks = compute_ranks_all(model, dataset, split, max_len=cfg.max_len, device=device,
                                  seed=cfg.seed)
        for p in PROTOCOLS:
            metrics.setdefault(p, {})[split] = aggregate(ranking_metrics(ranks[p]), p)
    test_ranks = ranks["strict"]  # saved: light runs stay comparable user by user
    state.eval_seconds += time.perf_counter() - t1
    metrics["train_seconds"] = round(state.train_seconds, 3)
    metrics["eval_seconds"] = round(state.eval_seconds, 3)
    metrics["world_size"] = info.world_size
    if freeze_embedding:
        for p in model.parameters():
            p.requires_grad_(True)
    ckpt = make_checkpoint(model, dataset=dataset.describe(), config=cfg, stage=stage,
                           epoch=state.epoch, metrics=metrics, parent=parent,
                           trained_on=device_description(device), test_ranks=test_ranks)
    if info.is_main:
        atomic_save(ckpt, paths.final)
        paths.resume.unlink(missing_ok=True)
    distributed.barrier(info)  # other ranks may read the checkpoint next (multi-stage runs)
    return StageResult(stage, paths.final, metrics, state.epoch, state.train_seconds,
                       state.eval_seconds, read_log(paths.log))


def train_stage(model, dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, *,
                stage: str, parent: dict | None = None, freeze_embedding: bool = False,
                epochs: int | None = None, select: bool = True, resume: bool = False,
                callbacks=(), progress: bool = True, optimizer_params=None) -> StageResult:
    """Train ``model`` for one stage and write ``out_dir/{stage}.pt``.

    freeze_embedding: keep the item table out of the optimizer (a real freeze: no gradient and no
        weight decay reaches it).
    select: False for a fixed-length stage (e.g. ADRec's warm-up): no early stopping, the last
        epoch's model is kept.
    optimizer_params: optional explicit parameter list (overrides the freeze logic), used for
        parity options that need the authors' behaviour.
    callbacks: objects with either hook or both. ``on_evaluate(model=, stage=, epoch=) -> dict |
        None``: the returned items are added to that epoch's log record. ``on_log(record)`` gets
        every epoch's record as written to the log (main process only), e.g. to mirror it to
        TensorBoard or W&B (``collapse_kit.loggers``).
    """
    cfg = validate(cfg)
    paths = StagePaths.of(out_dir, stage)
    info, device = distributed.setup(resolve_device(cfg.device))
    # "auto" becomes what it means here, so the checkpoint (and a resume's settings check)
    # records the precision the stage really trained at
    cfg = with_resolved_precision(cfg, device.type, cpu_bf16=model.cpu_bf16)
    n_epochs = cfg.epochs if epochs is None else epochs
    _check_max_len(model, cfg)
    settings = run_settings(model, dataset, cfg, parent=parent)
    finished = _reuse_finished(paths, settings, resume=resume)
    if finished is not None:
        return finished

    model.to(device)
    optimizer, scheduler = _optimizer(model, cfg, freeze_embedding, optimizer_params)
    step_model = _data_parallel(model, info, device)
    batches, generator = _training_batches(model, dataset, cfg)
    resuming = dict(model=model, optimizer=optimizer, scheduler=scheduler, generator=generator,
                    device=device, settings=settings)
    state = _start(paths, cfg, stage=stage, resume=resume, is_main=info.is_main, **resuming)

    last_write = -math.inf  # the first finished epoch always writes the resume state
    with tqdm(total=n_epochs, initial=state.epoch, desc=stage, unit="epoch",
              disable=not progress or not info.is_main, leave=False) as bar:
        while state.epoch < n_epochs and not state.stopped:
            epoch = train_epoch(model, batches, optimizer, cfg, device=device, info=info,
                                forward=step_model)
            scheduler.step()
            state.epoch += 1
            state.train_seconds += epoch.seconds
            record = {"stage": stage, "epoch": state.epoch, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(epoch.seconds, 4), **epoch.losses}
            _check_finite(record, cfg)
            if state.epoch % cfg.eval_every == 0 or state.epoch == n_epochs:
                record.update(evaluate_and_select(model, dataset, cfg, state, stage=stage,
                                                  select=select, callbacks=callbacks,
                                                  device=device))
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                ndcg20=f"{record['valid']['NDCG@20']:.2f}")
            if info.is_main:
                append_log_line(paths.log, record)
                for cb in callbacks:
                    if hasattr(cb, "on_log"):
                        cb.on_log(record)
                if time.perf_counter() - last_write >= cfg.resume_seconds:
                    save_resume(paths.resume, state, **resuming)
                    last_write = time.perf_counter()
            bar.update(1)
    return finish_stage(model, dataset, cfg, state, paths, stage=stage, select=select,
                        freeze_embedding=freeze_embedding, parent=parent, info=info,
                        device=device)


def _start(paths: StagePaths, cfg: TrainConfig, *, stage: str, resume: bool, is_main: bool,
           **resuming) -> StageState:
    """The state to start the epochs from: the resume file's (the log cut back to its epoch), or
    a fresh one with the global RNG seeded and the log removed."""
    if resume and paths.resume.exists():
        state = load_resume(paths.resume, **resuming)
        _truncate_log(paths.log, state.epoch)
        log.info("resuming %s from epoch %d", stage, state.epoch)
        return state
    seed_everything(cfg.seed)
    if is_main:
        paths.log.unlink(missing_ok=True)
    return StageState()


def _check_max_len(model, cfg: TrainConfig) -> None:
    if getattr(model.args, "max_len", cfg.max_len) < cfg.max_len:
        raise ValueError(f"max_len={cfg.max_len} exceeds the model's position table "
                         f"(max_len={model.args.max_len}); set max_len for both with --set")


def _reuse_finished(paths: StagePaths, settings: dict, *, resume: bool) -> StageResult | None:
    """Check what the run folder already holds: the finished stage's result when ``resume``
    reuses it (same settings), None when the stage is to be trained."""
    if paths.final.exists():
        if not resume:
            raise FileExistsError(17, "stage already finished here; pass --resume to reuse it "
                                      "or choose another --out", str(paths.final))
        ckpt = load_checkpoint(paths.final)
        check_same_settings(checkpoint_settings(ckpt), settings, paths.final)
        return _finished(paths.final, paths.log, ckpt)
    if paths.resume.exists() and not resume:
        raise FileExistsError(17, "an interrupted run is here; pass --resume to continue it or "
                                  "choose another --out", str(paths.resume))
    return None


def _optimizer(model, cfg: TrainConfig, freeze_embedding: bool, params=None):
    """Adam over ``params``, or over every parameter but the frozen item table; and the cosine
    schedule stepped once per epoch."""
    emb = {id(p) for p in model.embedding_parameters()}
    if params is None:
        for p in model.parameters():
            p.requires_grad_(not (freeze_embedding and id(p) in emb))
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: 0.5 * (1.0 + math.cos(math.pi * e / cfg.cosine_t_max)))
    return optimizer, scheduler


def _data_parallel(model, info: distributed.DistInfo, device: torch.device):
    """``model`` itself in one process; its DistributedDataParallel wrapper under torchrun."""
    if not info.enabled:
        return model
    if hasattr(model, "backward"):
        raise ValueError(f"model {model.name!r} does its own backward (e.g. pcgrad=true), "
                         "which DistributedDataParallel cannot wrap; train it in one process")
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True)


def _training_batches(model, dataset: SequenceDataset, cfg: TrainConfig):
    """The epoch's batches (a fresh order every epoch, drawn from the returned generator,
    seeded with ``cfg.seed``) of the training samples the model trains on."""
    hists, tgts = training_pairs(dataset, cfg.max_len,
                                 prefixes=(model.train_samples == "prefixes"))
    generator = torch.Generator().manual_seed(cfg.seed)
    if not hists:
        raise ValueError(f"{dataset.name} has no training samples: every user has fewer than 2 "
                         "training items (a target needs a history); use a dataset with longer "
                         "sequences")
    batches = BatchIterator(hists, tgts, max_len=cfg.max_len, batch_size=cfg.batch_size,
                            generator=generator, bucket=cfg.batching.startswith("bucket"),
                            trim=not model.needs_full_width,
                            constant_totals=(cfg.batching == "bucket-constant"))
    return batches, generator


def _check_finite(record: dict, cfg: TrainConfig) -> None:
    """Raise ``TrainingDiverged`` when a loss of the epoch's record is NaN or infinite."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(
            f"training diverged in {record['stage']}, epoch {record['epoch']}: "
            + ", ".join(f"{k} = {record[k]}" for k in bad)
            + f"; no checkpoint was written; lower lr (now {cfg.lr:g}) or check the --set "
            "values")


def append_log_line(path: Path, record: dict) -> None:
    """Append one JSON line with a single ``write`` (a crash or a full disk can still leave a
    torn last line: :func:`read_log` drops it)."""
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(path: str | Path) -> list[dict]:
    """The records of a JSON-lines run log. A torn last line (a crash or full disk during its
    write) is dropped with a warning; a damaged line before it is an error naming the file."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            if all(not rest.strip() for rest in lines[i + 1:]):
                log.warning("%s: dropped a torn last line (line %d)", path, i + 1)
                break
            raise ValueError(f"{path}: line {i + 1} is not a JSON record; the log is damaged "
                             "(delete the run folder to start again)")
        rows.append(row)
    return rows


def _truncate_log(path: Path, epoch: int) -> None:
    """Drop log lines written after the resumed epoch (a kill between log and state write), and
    a torn last line; the log is replaced atomically."""
    rows = [r for r in read_log(path) if r.get("epoch", 0) <= epoch]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def _finished(final_path: Path, log_path: Path, ckpt: dict | None = None) -> StageResult:
    ckpt = load_checkpoint(final_path) if ckpt is None else ckpt
    m = ckpt["metrics"]
    return StageResult(ckpt["stage"], final_path, m, ckpt["epoch"], m.get("train_seconds", 0.0),
                       m.get("eval_seconds", 0.0), read_log(log_path))

