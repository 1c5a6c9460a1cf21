"""Tables for reports: mean +- sd cells, provenance stamps, Markdown / CSV / LaTeX output.

Pure formatting: rows in, text out; no I/O (the caller writes files).
"""
from __future__ import annotations

import csv
import io
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

FORMATS = ("markdown", "csv", "latex")


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
    import os

    try:
        import torch

        dev = (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
               else f"CPU ({os.cpu_count()} cores)")
        tv = f", torch {torch.__version__}"
    except ImportError:  # pragma: no cover - torch is a dependency
        dev, tv = f"CPU ({os.cpu_count()} cores)", ""
    return f"{dev}, {platform.machine()}, Python {platform.python_version()}{tv}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Table:
    """A titled table with a provenance stamp; ``render(fmt)`` gives Markdown, CSV or LaTeX."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    stamp: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def render(self, fmt: str = "markdown") -> str:
        if fmt == "markdown":
            out = [f"### {self.title}", ""]
            out += [f"- {k}: {v}" for k, v in self.stamp.items()]
            out += ["", "| " + " | ".join(self.columns) + " |",
                    "|" + "---|" * len(self.columns)]
            out += ["| " + " | ".join(r) + " |" for r in self.rows]
            if self.notes:
                out += [""] + self.notes
            return "\n".join(out) + "\n"
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for k, v in self.stamp.items():
                w.writerow([f"# {k}: {v}"])
            w.writerow(self.columns)
            w.writerows(self.rows)
            return buf.getvalue()
        if fmt == "latex":
            esc = _latex
            out = [f"% {self.title}"] + [f"% {k}: {v}" for k, v in self.stamp.items()]
            out += [r"\begin{tabular}{l" + "c" * (len(self.columns) - 1) + "}", r"\toprule",
                    " & ".join(esc(c) for c in self.columns) + r" \\", r"\midrule"]
            out += [" & ".join(esc(c).replace("±", r"$\pm$") for c in r) + r" \\"
                    for r in self.rows]
            out += [r"\bottomrule", r"\end{tabular}"]
            return "\n".join(out) + "\n"
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(c, c) for c in str(text))
