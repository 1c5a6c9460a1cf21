"""`collapse-kit train`, `collapse-kit evaluate` and `collapse-kit data stats`."""
from __future__ import annotations

import json
import os
from pathlib import Path

from collapse_kit.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (all stages for adrec) and save checkpoints")
    p.add_argument("--model", default=None,
                   help="sasrec | stage1 | adrec | diffurec | dreamrec (required, here or in "
                        "--config)")
    p.add_argument("--dataset", default=None,
                   help="bundled name (ml-100k, beauty, ...) or path (required, here or in "
                        "--config)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML file of `key: value` settings (model, dataset, stage1 and any "
                        "--set key), e.g. a run folder's config.yaml; flags and --set override "
                        "it")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default runs/MODEL-DATASET-sSEED)")
    p.add_argument("--epochs", type=int, default=None, help="cap on the epochs of each stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training or model setting (repeatable), e.g. --set lr=5e-4")
    p.add_argument("--stage1", default=None, metavar="CKPT",
                   help="adrec: start from this stage-1 checkpoint (ours or the authors')")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (finished stages are reused)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--no-monitor", action="store_true",
                   help="do not record collapse statistics of the item table at evaluations")
    p.add_argument("--logger", choices=("none", "tensorboard", "wandb"), default="none",
                   help="also send losses, valid metrics and collapse statistics per epoch to "
                        "TensorBoard (OUT/tensorboard, with the final item table in its "
                        "projector) or W&B (offline unless configured); default none: the "
                        "JSON-lines logs in OUT are always written")
    p.add_argument("--json", action="store_true",
                   help='last stdout line: {"valid": {...}, "test": {...}, "checkpoint": PATH}')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="full-ranking HR/NDCG@5/10/20 of a checkpoint (and the popularity of "
                         "what it recommends), or a paired comparison with --against",
        description="Full-ranking HR@K / NDCG@K (K = 5, 10, 20, in %) of a checkpoint on its "
                    "valid and test users, with the popularity of what it recommends: "
                    "coverage@K (%% of the catalogue in any top K), avg_popularity@K (mean "
                    "training interactions of the recommended items), head_share@K (%% of the "
                    "top-K slots taken by the 20%% most popular items). With --against: a paired "
                    "per-user comparison of two models on the same users.")
    p.add_argument("checkpoint", metavar="CKPT", nargs="+",
                   help="checkpoint; several (e.g. one per seed) only with --against")
    p.add_argument("--against", nargs="+", metavar="CKPT", default=None,
                   help="paired comparison: the difference CKPT - AGAINST in every metric on the "
                        "same users, with a paired bootstrap 95%% interval over users and a "
                        "Wilcoxon signed-rank p-value; give one AGAINST per CKPT (seed i against "
                        "seed i): each user's differences are averaged over the pairs")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                   help="--against: user resamples for the interval (default 2000)")
    p.add_argument("--stored-ranks", action="store_true",
                   help="--against: compare the per-user test ranks the checkpoints stored at "
                        "training (test_ranks; strict protocol, test split only) instead of "
                        "ranking the users again; works on light runs whose weights were "
                        "stripped, and gives the reports' paired cells")
    p.add_argument("--dataset", default=None, help="dataset (default: the checkpoint's own)")
    p.add_argument("--model", default=None,
                   help="model to load a foreign state dict into (e.g. stage1 for the authors' "
                        "pretrain.pth)")
    p.add_argument("--protocol", choices=("strict", "official"), default="strict")
    p.add_argument("--attention-mask", choices=("correct", "official"), default=None,
                   help="padding mask used at evaluation (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seed of diffusion sampling noise")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    s = dsub.add_parser("stats", help="users, items, interactions, average length (Table 7)")
    s.add_argument("dataset", metavar="NAME|PATH")
    s.add_argument("--json", action="store_true")
    s.add_argument("--rating-threshold", type=float, default=None,
                   help="raw logs: keep ratings strictly above this value")
    s.add_argument("--k-core", type=int, default=5, help="raw logs: k of the k-core filter")
    s.set_defaults(func=cmd_data_stats)


def cmd_train(args) -> int:
    from adrec.config import TrainConfig, config_yaml, file_settings, parse_overrides, \
        with_resolved_precision
    from adrec.data import load_dataset
    from adrec.models import model_class
    from adrec.pipeline import train_model
    from adrec.train import resolve_device, retain_freed_memory

    entries = _read_config(args)
    cls = model_class(args.model)
    file_train, file_model = file_settings(entries, TrainConfig, cls.Args)
    train_over, model_over = parse_overrides(args.overrides, TrainConfig, cls.Args)
    train_over, model_over = {**file_train, **train_over}, {**file_model, **model_over}
    if args.seed is not None:
        train_over["seed"] = args.seed
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {args.epochs}")
        train_over["epochs"] = args.epochs
    cfg = TrainConfig(**train_over)
    dataset = load_dataset(args.dataset)
    out = Path(args.out or f"runs/{args.model}-{dataset.name}-s{cfg.seed}")
    options = {}
    if args.stage1 is not None:
        if args.model != "adrec":
            raise UserError("--stage1 applies only to --model adrec")
        options["stage1"] = args.stage1
    # the run's settings as its config.yaml (what --config reads back), checked before training;
    # matmul_precision as "auto" resolves here, as the checkpoints record it, so that the file
    # repeats this run's numerics on another machine too
    config_text = config_yaml(args.model, args.dataset,
                              with_resolved_precision(cfg, resolve_device(cfg.device).type,
                                                      cpu_bf16=cls.cpu_bf16),
                              cls.Args(**model_over), stage1=args.stage1)
    from collapse_kit.monitor import CollapseMonitor

    callbacks = [] if args.no_monitor else [CollapseMonitor()]
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    logger = _logger(args, out, dataset, cfg, model_over) if is_main else None
    if logger is not None:
        callbacks.append(logger)
    # the command's process trains and ends: keep freed heap memory for reuse (process-wide and
    # irreversible, so the library leaves the choice to its caller; numbers are unchanged)
    retain_freed_memory()
    try:
        result = train_model(args.model, dataset, cfg, out, model_args=model_over,
                             resume=args.resume, progress=not args.no_progress,
                             callbacks=callbacks, **options)
    except BaseException:
        if logger is not None:
            logger.finish()
        raise
    summary = result.summary(cfg.protocol)
    if logger is not None:
        _finish_logger(logger, summary, dataset)
    if not is_main:
        return 0
    from collapse_kit.tables import atomic_write

    atomic_write(out / "config.yaml", config_text)  # what --config reads back
    if args.json:
        print(json.dumps(summary))
    else:
        _print_metrics(summary, cfg.protocol)
        print(f"checkpoint: {summary['checkpoint']}")
    return 0


def _logger(args, out: Path, dataset, cfg, model_over: dict):
    """The --logger backend (None for none), created before training so that a missing package
    is an error before any epoch runs."""
    import dataclasses

    from adrec.config import validate
    from collapse_kit.loggers import make_logger

    validate(cfg)  # a bad setting is reported before the logger writes anything

    config = {"model": args.model, "dataset": dataset.name, **dataclasses.asdict(cfg),
              **{f"model.{k}": v for k, v in model_over.items()}}
    return make_logger(args.logger, out, name=out.name, config=config)


def _finish_logger(logger, summary: dict, dataset) -> None:
    """Test metrics and the final item table (with the items' ids and metadata) to the logger."""
    from collapse_kit.commands.export import dataset_ids, item_metadata
    from collapse_kit.io import load_embeddings

    table = load_embeddings(summary["checkpoint"]).table
    ids, _ = dataset_ids(dataset, table.shape[0])
    logger.finish(summary.get("test"), table=table, ids=ids,
                  metadata=item_metadata(dataset, table.shape[0]))


RUN_KEYS = ("model", "dataset", "stage1")  # what a train config file holds besides settings


def _read_config(args) -> list:
    """The settings entries of ``--config`` (none without it); its ``model``, ``dataset`` and
    ``stage1`` fill the flags not given (a flag overrides the file)."""
    from adrec.config import file_value, read_config_file

    entries = read_config_file(args.config) if args.config else {}
    for key in RUN_KEYS:
        entry = entries.pop(key, None)
        if entry is not None and getattr(args, key) is None:
            setattr(args, key, file_value(entry, str))
    missing = [key for key in ("model", "dataset") if getattr(args, key) is None]
    if missing:
        lines = " and ".join(f"{key}:" for key in missing)
        raise UserError(f"give --{' and --'.join(missing)} (or {lines} in --config FILE)")
    return list(entries.values())


def cmd_evaluate(args) -> int:
    import torch

    from adrec.data import training_counts
    from adrec.evaluate import (KS, aggregate, ranking_metrics, recommendation_popularity,
                                scoring_pass)
    from adrec.pipeline import load_ranking_model

    if args.against is not None:
        return _cmd_paired(args)
    if args.stored_ranks:
        raise UserError("--stored-ranks is for a paired comparison: add --against CKPT")
    if len(args.checkpoint) > 1:
        raise UserError(f"evaluate takes one checkpoint ({len(args.checkpoint)} given); several "
                        "are for a paired comparison with --against")
    model, dataset, max_len = load_ranking_model(args.checkpoint[0], model=args.model,
                                                 dataset=args.dataset,
                                                 attention_mask=args.attention_mask)
    popularity = training_counts(dataset)
    result = {}
    for split in ("valid", "test"):
        run = scoring_pass(model, dataset, split, protocols=(args.protocol,), topk=max(KS),
                           max_len=max_len, device=torch.device("cpu"), seed=args.seed)
        result[split] = aggregate(ranking_metrics(run.ranks[args.protocol]), args.protocol)
        result[split].update(recommendation_popularity(run.top, popularity))
    if args.json:
        print(json.dumps(result))
    else:
        _print_metrics(result, args.protocol)
    return 0


def _cmd_paired(args) -> int:
    """``evaluate A [A2 ...] --against B [B2 ...]``: paired per-user differences."""
    from adrec.evaluate import METRIC_NAMES
    from collapse_kit.paired import paired_comparison

    if len(args.against) != len(args.checkpoint):
        raise UserError(f"--against needs one checkpoint per CKPT (pairs seed by seed); got "
                        f"{len(args.checkpoint)} and {len(args.against)}")
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap must be at least 100 user resamples; got {args.bootstrap}")
    per_user = _stored_per_user(args) if args.stored_ranks else _ranked_per_user(args)
    splits = [s for s in ("valid", "test") if s in per_user["a"]]
    result = {"protocol": args.protocol, "pairs": len(args.checkpoint),
              "n_users": per_user["n_users"], "bootstrap": args.bootstrap, "seed": args.seed,
              "ranks": "stored" if args.stored_ranks else "computed"}
    for split in splits:
        result[split] = {m: paired_comparison(
            [r[m] * 100.0 for r in per_user["a"][split]],
            [r[m] * 100.0 for r in per_user["b"][split]],
            n_resamples=args.bootstrap, random_state=args.seed) for m in METRIC_NAMES}
    if args.json:
        print(json.dumps(result))
    else:
        _print_paired(result, args, splits)
    return 0


def _per_user(args, ranks_of) -> dict:
    """Per-user metrics of every CKPT ("a") and AGAINST ("b") checkpoint, by split, and the
    number of users. ``ranks_of(path)`` gives (data key, {split: ranks}); the data key
    (name, n_items, n_users, fingerprint) must be the same for all: a UserError otherwise."""
    from adrec.evaluate import ranking_metrics

    per_user, reference = {"a": {}, "b": {}}, None
    for side, paths in (("a", args.checkpoint), ("b", args.against)):
        for path in paths:
            key, ranks_by_split = ranks_of(path)
            if reference is None:
                reference = (key, path)
            elif key != reference[0]:
                raise UserError(f"{path} was trained on other data ({key[0]}, {key[1]} items) "
                                f"than {reference[1]}: a paired comparison needs the same users")
            for split, ranks in ranks_by_split.items():
                per_user[side].setdefault(split, []).append(ranking_metrics(ranks))
    return {**per_user, "n_users": int(reference[0][2])}


def _ranked_per_user(args) -> dict:
    """``_per_user``, ranking every checkpoint's valid and test users again."""
    import torch

    from adrec.evaluate import compute_ranks_all
    from adrec.pipeline import load_ranking_model

    def ranks_of(path):
        model, dataset, max_len = load_ranking_model(
            path, model=args.model, dataset=args.dataset, attention_mask=args.attention_mask)
        return ((dataset.name, dataset.n_items, dataset.n_users, dataset.fingerprint),
                {split: compute_ranks_all(model, dataset, split, protocols=(args.protocol,),
                                          max_len=max_len, device=torch.device("cpu"),
                                          seed=args.seed)[args.protocol]
                 for split in ("valid", "test")})

    return _per_user(args, ranks_of)


def _stored_per_user(args) -> dict:
    """``_per_user`` from the test ranks the checkpoints stored at training
    (``--stored-ranks``: strict protocol, test split; light runs work)."""
    from adrec.checkpoint import stored_test_ranks

    given = [flag for flag, value in (("--protocol official", args.protocol != "strict"),
                                      ("--model", args.model), ("--dataset", args.dataset),
                                      ("--attention-mask", args.attention_mask)) if value]
    if given:
        raise UserError(f"--stored-ranks uses the strict test ranks saved at training; "
                        f"{', '.join(given)} cannot change them (drop "
                        f"{'it' if len(given) == 1 else 'them'}, or drop --stored-ranks to rank "
                        "the users again)")

    def ranks_of(path):
        ranks, data = stored_test_ranks(path)
        return ((data["name"], data["n_items"], data["n_users"], data.get("fingerprint")),
                {"test": ranks.numpy()})

    return _per_user(args, ranks_of)


def _print_paired(result: dict, args, splits: list[str]) -> None:
    from adrec.evaluate import METRIC_NAMES

    a = " ".join(args.checkpoint)
    b = " ".join(args.against)
    print(f"A: {a}\nB: {b}")
    print(f"paired over {result['n_users']} users x {result['pairs']} pair(s), protocol "
          f"{result['protocol']}; metrics in %, delta = A - B, 95% paired bootstrap interval "
          f"over users ({result['bootstrap']} resamples, seed {result['seed']}), Wilcoxon "
          "signed-rank p")
    if result["ranks"] == "stored":
        print("ranks: the per-user test ranks the checkpoints stored at training (test_ranks; "
              "no valid split)")
    for split in splits:
        print(f"{split}")
        print(f"  {'metric':<9}{'A':>9}{'B':>9}{'delta':>9}   {'95% CI':<19}{'p':>10}")
        for m in METRIC_NAMES:
            r = result[split][m]
            p = "n/a" if r["p_wilcoxon"] is None else f"{r['p_wilcoxon']:.3g}"
            ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
            print(f"  {m:<9}{r['a']:9.3f}{r['b']:9.3f}{r['delta']:+9.3f}   {ci:<19}{p:>10}")


def _print_metrics(result: dict, protocol: str) -> None:
    from adrec.evaluate import KS, METRIC_NAMES

    print(f"protocol: {protocol} (metrics in %)")
    print(f"{'split':<6}" + "".join(f"{m:>9}" for m in METRIC_NAMES))
    for split in ("valid", "test"):
        print(f"{split:<6}" + "".join(f"{result[split][m]:9.3f}" for m in METRIC_NAMES))
    if "coverage@5" not in result["valid"]:
        return
    names = [f"{m}@{k}" for m in ("coverage", "head_share", "avg_popularity") for k in KS]
    print("popularity of the recommendations (coverage, head share in %; avg popularity in "
          "training interactions; head = the 20% most popular items)")
    print(f"{'split':<6}" + "".join(f"{m:>18}" for m in names))
    for split in ("valid", "test"):
        print(f"{split:<6}" + "".join(f"{result[split][m]:18.3f}" for m in names))


def cmd_data_stats(args) -> int:
    from adrec.data import load_dataset

    ds = load_dataset(args.dataset, rating_threshold=args.rating_threshold, k_core=args.k_core)
    stats = ds.stats()
    if args.json:
        print(json.dumps(stats))
    else:
        print(f"{'dataset':<12}{'users':>8}{'items':>8}{'interactions':>14}{'avg. length':>13}")
        print(f"{stats['dataset']:<12}{stats['users']:>8}{stats['items']:>8}"
              f"{stats['interactions']:>14}{stats['avg_length']:>13.2f}")
    return 0
