"""What `collapse-kit train --model NAME` runs: a model's stages through the one trainer.

Single-stage models (sasrec, stage1, diffurec, dreamrec) run one ``train_stage``. A model with a
recipe of several stages has it here, in ``PIPELINES`` (ADRec's three stages: ``train_adrec``);
the trainer itself is the same for all. The readers of what it writes (or of the authors' state
dicts) back into a model: ``load_stage1_embedding`` (ADRec's pre-trained table) and
``load_ranking_model`` (any checkpoint that can rank items, for evaluate and export).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from adrec.checkpoint import FORMAT, atomic_save, check_has_weights, checked_checkpoint, \
    load_checkpoint, load_weights, make_checkpoint, model_from_checkpoint, non_finite_tensors, \
    safe_load
from adrec.config import TrainConfig
from adrec.data import SequenceDataset, load_dataset
from adrec.models import build_model, model_class
from adrec.models.adrec import ADRec, ADRecArgs, check_args
from adrec.models.sasrec import convert_official_state_dict, is_official_state_dict
from adrec.train import StageResult, folder_lock, parent_record, seed_everything, train_stage

log = logging.getLogger(__name__)


def train_model(name: str, dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, *,
                model_args: dict | None = None, resume: bool = False, progress: bool = True,
                callbacks=(), **pipeline_options) -> StageResult:
    """Train model ``name`` on ``dataset``; returns the result of its final (selected) stage.

    The run folder is locked for the whole run (a second trainer into it fails at once); under
    torchrun only rank 0, the one that writes, takes the lock. Temporary files left by a killed
    run are removed once the lock is held."""
    if int(os.environ.get("RANK", "0")) != 0:
        return _train_model(name, dataset, cfg, out_dir, model_args=model_args, resume=resume,
                            progress=progress, callbacks=callbacks, **pipeline_options)
    with folder_lock(out_dir):
        for stale in Path(out_dir).glob(".*.tmp"):
            log.info("removing %s, left by an interrupted write", stale)
            stale.unlink(missing_ok=True)
        return _train_model(name, dataset, cfg, out_dir, model_args=model_args, resume=resume,
                            progress=progress, callbacks=callbacks, **pipeline_options)


def _train_model(name, dataset, cfg, out_dir, *, model_args, resume, progress, callbacks,
                 **pipeline_options) -> StageResult:
    model_class(name)  # an unknown name fails here, before any option is read
    if name in PIPELINES:
        return PIPELINES[name](dataset, cfg, out_dir, model_args=model_args or {},
                               resume=resume, progress=progress, callbacks=callbacks,
                               **pipeline_options)
    if pipeline_options:
        raise ValueError(f"options {sorted(pipeline_options)} do not apply to model {name!r}")
    seed_everything(cfg.seed)
    model = build_model(name, dataset.n_items, model_args)
    return train_stage(model, dataset, cfg, out_dir, stage=name, resume=resume,
                       progress=progress, callbacks=callbacks)


# -------------------------------------------------------------------------------------------
# ADRec's three-stage training strategy (paper 3.4, figure 3; official-implementation.md 3.1-3.2)


def train_adrec(dataset: SequenceDataset, cfg: TrainConfig, out_dir: str | Path, *,
                model_args: dict | None = None, resume: bool = False, progress: bool = True,
                callbacks=(), stage1: str | Path | None = None) -> StageResult:
    """Train ADRec in up to three stages through the one trainer; returns the "best" result.

    1. ``stage1.pt``: the stage-1 model (SASRec without positions) pre-trains E with CE until
       early stopping. Skipped with ``stage1=CKPT`` (ours or the authors' ``pretrain.pth``, which
       then becomes the parent) or ``pretrain=False`` (end-to-end, E starts N(0, emb_init_std)).
    2. ``stage2.pt``: warm-up, ``cfg.warmup_epochs`` epochs (capped by ``cfg.epochs``) with E
       frozen for real (no gradient, not in the optimizer, no weight decay); CAM, ADM and the
       time MLP train from scratch. Skipped with ``warmup=False``.
    3. ``stage3.pt``: all parameters until early stopping; the selected model.
    4. ``best.pt``: the selected model again, as the run's product (parent: stage3.pt).

    Each checkpoint names its stage and its parent (path and sha256). With ``resume`` the
    finished stages are reused and an interrupted one continues.

    Departures from the released code (documented in the README of results): stage 3 starts a
    fresh Adam state and cosine schedule, where the released code continues those of the
    warm-up; the first validation is after ``eval_every`` epochs of stage 3.
    """
    args = ADRecArgs(**(model_args or {}))
    check_args(args)
    out_dir = Path(out_dir)
    common = dict(resume=resume, progress=progress, callbacks=callbacks)
    if stage1 is not None and not args.pretrain:
        raise ValueError("--stage1 gives a pre-trained embedding but pretrain=false asks for "
                         "end-to-end training; drop one of them")
    if args.warmup and cfg.warmup_epochs < 1:
        raise ValueError(f"warmup_epochs must be >= 1 when warmup=true, got "
                         f"{cfg.warmup_epochs}; set warmup=false to skip the warm-up")
    if args.warmup and not args.pretrain and stage1 is None:
        log.warning("warm-up with pretrain=false freezes a randomly initialised embedding; the "
                    "paper's end-to-end variant also sets warmup=false")
    timings = {}

    # stage 1: the pre-trained embedding table (with its padding row)
    table, parent = None, None
    if stage1 is not None:
        table = load_stage1_embedding(stage1, n_items=dataset.n_items, hidden=args.hidden)
        parent = parent_record(stage1, "stage1")
    elif args.pretrain:
        seed_everything(cfg.seed)
        pre = build_model("stage1", dataset.n_items, stage1_args(args))
        r1 = train_stage(pre, dataset, cfg, out_dir, stage="stage1", **common)
        timings["stage1"] = _timing(r1)
        table = load_checkpoint(r1.checkpoint)["state_dict"]["item_embedding.weight"]
        parent = parent_record(r1.checkpoint, "stage1")

    seed_everything(cfg.seed)
    model = ADRec(args, dataset.n_items)
    if table is not None:
        with torch.no_grad():
            model.item_embedding.weight.copy_(table)

    # stage 2: warm-up with the embedding frozen
    if args.warmup:
        epochs = min(cfg.warmup_epochs, cfg.epochs)
        if args.leak_weight_decay:  # released-code parity: E frozen but still in Adam
            for p in model.embedding_parameters():
                p.requires_grad_(False)
            r2 = train_stage(model, dataset, cfg, out_dir, stage="stage2", parent=parent,
                             epochs=epochs, select=False,
                             optimizer_params=list(model.parameters()), **common)
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            r2 = train_stage(model, dataset, cfg, out_dir, stage="stage2", parent=parent,
                             epochs=epochs, select=False, freeze_embedding=True, **common)
        timings["stage2"] = _timing(r2)
        load_weights(model, load_checkpoint(r2.checkpoint)["state_dict"])
        parent = parent_record(r2.checkpoint, "stage2")

    # stage 3: full-parameter training until early stopping
    r3 = train_stage(model, dataset, cfg, out_dir, stage="stage3", parent=parent, **common)
    timings["stage3"] = _timing(r3)
    ckpt3 = load_checkpoint(r3.checkpoint)
    load_weights(model, ckpt3["state_dict"])

    best_path = out_dir / "best.pt"
    metrics = {**r3.metrics, "stages": timings}
    # the stages' config: matmul_precision as it resolved on this machine, not "auto"
    best = make_checkpoint(model, dataset=dataset.describe(), config=ckpt3["config"],
                           stage="best", epoch=r3.epochs, metrics=metrics,
                           parent=parent_record(r3.checkpoint, "stage3"),
                           test_ranks=ckpt3.get("test_ranks"))
    atomic_save(best, best_path)
    return StageResult("best", best_path, metrics, r3.epochs, r3.train_seconds, r3.eval_seconds,
                       r3.history)


def _timing(result: StageResult) -> dict:
    return {"epochs": result.epochs, "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(result.eval_seconds, 3)}


def stage1_args(args: ADRecArgs) -> dict:
    """The stage-1 model's arguments implied by ADRec's (same width, depth, masks, dropouts)."""
    return {"hidden": args.hidden, "n_blocks": args.n_blocks, "n_heads": args.n_heads,
            "dropout": args.dropout, "emb_dropout": args.emb_dropout, "max_len": args.max_len,
            "init_std": args.stage1_init_std, "attention_mask": args.attention_mask,
            "positions": False}


def load_stage1_embedding(path: str | Path, *, n_items: int, hidden: int) -> torch.Tensor:
    """The item table (n_items + 1, hidden), padding row included, of a stage-1 checkpoint.

    Accepts a collapse-kit checkpoint of a ``stage1`` or ``sasrec`` model, or the authors'
    plain state dict (``pretrain.pth``, official-implementation.md section 3.3).
    """
    raw = safe_load(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        ckpt = checked_checkpoint(raw, path)
        if ckpt["model"] not in ("stage1", "sasrec"):
            raise ValueError(f"{path} holds a {ckpt['model']!r} model; --stage1 needs a stage1 "
                             "(or sasrec) checkpoint")
        state = ckpt["state_dict"]
    elif isinstance(raw, dict) and is_official_state_dict(raw):
        state = convert_official_state_dict(raw, positions=False)
    else:
        raise ValueError(f"{path} is neither a collapse-kit checkpoint nor the authors' stage-1 "
                         "state dict (item_embedding.weight and trm_encoder.* keys)")
    table = state["item_embedding.weight"]
    if tuple(table.shape) != (n_items + 1, hidden):
        raise ValueError(f"{path} has an item table of shape {tuple(table.shape)}, but this "
                         f"dataset and model need ({n_items + 1}, {hidden}); pass the stage-1 "
                         "checkpoint of the same dataset")
    return table.float()


# the models trained by a recipe of several stages; every other model is one ``train_stage``
PIPELINES = {"adrec": train_adrec}


def load_ranking_model(path: str | Path, *, model: str | None = None, dataset: str | None = None,
                       attention_mask: str | None = None):
    """(model, dataset, max_len) of a checkpoint that can rank items: a collapse-kit checkpoint
    (its model, data and max_len unless ``model`` / ``dataset`` say otherwise) or the authors'
    SASRec / pretrain state dict (``model`` and ``dataset`` required). Anything else, a model
    that does not match its data, or non-finite weights: one ValueError naming the fix."""
    raw = safe_load(path)
    overrides = {"attention_mask": attention_mask} if attention_mask else {}
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        ckpt = checked_checkpoint(raw, path)
        check_has_weights(ckpt, path)
        if model and model != ckpt["model"]:
            raise ValueError(f"{path} holds a {ckpt['model']!r} model, not {model!r}; "
                             "drop --model")
        data = load_dataset(dataset or ckpt["dataset"]["name"])
        if data.n_items != ckpt["dataset"]["n_items"]:
            raise ValueError(f"{path} was trained on {ckpt['dataset']['n_items']} items "
                             f"but {data.name} has {data.n_items}; pass the right --dataset")
        _check_finite(ckpt["state_dict"], path)
        return (model_from_checkpoint(ckpt, overrides=overrides), data,
                ckpt.get("config", {}).get("max_len", 50))
    if isinstance(raw, dict) and is_official_state_dict(raw):
        if not model or not dataset:
            raise ValueError("this is a foreign state dict: name the model and data, e.g. "
                             "--model stage1 --dataset ml-100k")
        if model not in ("stage1", "sasrec"):
            raise ValueError(f"the authors' SASRec/pretrain weights load into --model stage1 or "
                             f"sasrec, not {model!r}")
        data = load_dataset(dataset)
        rows = raw["item_embedding.weight"].shape[0]
        if rows != data.n_items + 1:
            raise ValueError(f"{path} has {rows - 1} items but {data.name} has "
                             f"{data.n_items}; pass the dataset it was trained on")
        _check_finite(raw, path)
        net = build_model(model, data.n_items, overrides)
        load_weights(net, convert_official_state_dict(raw, positions=net.args.positions))
        return net, data, 50
    raise ValueError(f"{path} is neither a collapse-kit checkpoint nor a known "
                     "state dict (expected item_embedding.weight and trm_encoder.* keys)")


def _check_finite(state_dict: dict, path) -> None:
    bad = non_finite_tensors(state_dict)
    if bad:
        raise ValueError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. "
                         f"{bad[0]}); the run diverged or the file is damaged, and its rankings "
                         "would be meaningless")
