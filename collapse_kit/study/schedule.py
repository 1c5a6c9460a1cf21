"""The parallel, resumable runner of a study: one ``collapse-kit train --resume`` subprocess per
run, ``jobs`` at a time, finished runs reused, interrupted ones resumed, ablations started once
their main ADRec run has its stage-1 checkpoint.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from adrec.config import PRESETS
from collapse_kit.study.runs import RunSpec, saved_settings_diff


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
