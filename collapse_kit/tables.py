"""Tables: mean +- sd cells, provenance stamps, Markdown / CSV / LaTeX / text output, and the
atomic text writer the reports use.

Formatting is pure (rows in, text out); ``atomic_write`` is the only function that touches disk.
"""
from __future__ import annotations

import csv
import io
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

FORMATS = ("markdown", "csv", "latex", "text")


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt_mean_sd(values: Sequence[float], digits: int = 2) -> str:
    m, s = mean_sd(values)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def machine_description() -> str:
    try:
        import torch

        dev = (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
               else f"CPU ({os.cpu_count()} cores)")
        tv = f", torch {torch.__version__}"
    except ImportError:  # pragma: no cover - torch is a dependency
        dev, tv = f"CPU ({os.cpu_count()} cores)", ""
    return f"{dev}, {platform.machine()}, Python {platform.python_version()}{tv}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Table:
    """A table with an optional title, provenance stamp and notes: ``render(fmt)`` gives
    Markdown, CSV, LaTeX or aligned plain text (no trailing newline).

    Every table the project prints or writes goes through here (analyze compare, probe, the
    reports), so there is one LaTeX escape map and one Markdown layout. ``align`` is one letter
    per column, "l" or "r": Markdown marks right-aligned columns (``---:``) and plain text pads
    them on the left; None leaves Markdown unaligned and plain text left-aligns the first column
    and right-aligns the others.
    """

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""
    stamp: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    align: str | None = None

    def render(self, fmt: str = "markdown") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return "\n".join(getattr(self, f"_{fmt}")())

    def _aligns(self) -> str:
        return self.align or "l" + "r" * (len(self.columns) - 1)

    def _with_notes(self, lines: list[str]) -> list[str]:
        return lines + ([""] + list(self.notes) if self.notes else [])

    def _markdown(self) -> list[str]:
        out = []
        if self.title or self.stamp:
            out = [f"### {self.title}", ""] + [f"- {k}: {v}" for k, v in self.stamp.items()] + [""]
        marks = ["---:" if a == "r" else "---" for a in self.align] if self.align else \
            ["---"] * len(self.columns)
        out += ["| " + " | ".join(_md_cell(c) for c in self.columns) + " |",
                "|" + "|".join(marks) + "|"]
        out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in self.rows]
        return self._with_notes(out)

    def _csv(self) -> list[str]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for k, v in self.stamp.items():
            w.writerow([f"# {k}: {v}"])
        w.writerow(self.columns)
        w.writerows(self.rows)
        return [buf.getvalue().removesuffix("\n")]

    def _latex(self) -> list[str]:
        out = ([f"% {self.title}"] if self.title or self.stamp else []) + \
            [f"% {k}: {v}" for k, v in self.stamp.items()]
        out += [r"\begin{tabular}{l" + "c" * (len(self.columns) - 1) + "}", r"\toprule",
                " & ".join(latex_escape(c) for c in self.columns) + r" \\", r"\midrule"]
        out += [" & ".join(latex_escape(c).replace("±", r"$\pm$") for c in r) + r" \\"
                for r in self.rows]
        return out + [r"\bottomrule", r"\end{tabular}"]

    def _text(self) -> list[str]:
        rows = [self.columns] + [list(r) for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]

        def line(r):
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                             for c, w, a in zip(r, widths, self._aligns()))

        out = [line(self.columns), "  ".join("-" * w for w in widths)]
        return self._with_notes(out + [line(r) for r in self.rows])


def _md_cell(text) -> str:
    """A Markdown table cell: a literal "|" would end the cell, so it is escaped."""
    return str(text).replace("|", r"\|")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (the one map every table uses)."""
    return "".join(_LATEX.get(c, c) for c in str(text))


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text, or bytes such as a rendered PNG) to ``path`` (its folder created
    if needed) through a temporary file beside it and a rename, so a reader (or a crash) never
    sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_together({path: data})[0]


def write_together(files: dict[Path, str | bytes]) -> list[Path]:
    """Write several files as one step: each to a temporary beside it (fsynced, with the usual
    permissions, 0666 less the umask), then all renamed into place. On any failure the
    temporaries are removed and every target is as it was: a target already renamed is
    removed again, or restored from a hard link kept while the renames run. Their folders
    must exist."""
    temps, backups, renamed = [], [], []
    try:
        for path, data in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                mask = os.umask(0)
                os.umask(mask)
                os.fchmod(f.fileno(), 0o666 & ~mask)
                os.fsync(f.fileno())
        for tmp, path in temps:
            backup = None
            if len(temps) > 1 and path.exists():
                backup = path.with_name(f".{path.name}.{os.getpid()}.bak")
                os.link(path, backup)
                backups.append(backup)
            os.replace(tmp, path)
            renamed.append((path, backup))
    except BaseException:
        for path, backup in reversed(renamed):
            if backup is not None:
                os.replace(backup, path)
            else:
                path.unlink(missing_ok=True)
        for leftover in [*(Path(t) for t, _ in temps), *backups]:
            leftover.unlink(missing_ok=True)
        raise
    for backup in backups:
        backup.unlink()
    return [Path(p) for p in files]
