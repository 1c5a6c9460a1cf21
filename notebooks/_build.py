"""Build the five stage notebooks from their percent-format sources (``NN_name.py``, jupytext's
``# %%`` cells) and, with ``--execute``, run them top to bottom with nbclient and save them with
their outputs (what is committed). Edit the ``.py`` files, never the ``.ipynb``.

    python notebooks/_build.py                 # write the .ipynb files without outputs
    python notebooks/_build.py --execute       # ... and execute them (committed outputs)
    python notebooks/_build.py --execute 05    # only the notebooks whose name starts with 05

IPython magics are commented out (``# %matplotlib inline``) so that the sources are plain Python
that linters and the duplicate finder read. A cell ``# %% include="NAME"`` stands for the cell ``name="NAME"`` of ``_common.py`` (the
parameters and set-up cells every notebook shares). ``--execute`` runs with
``COLLAPSE_KIT_PRESET`` (default ``tiny``: the live-training cells train 2 epochs with hidden
size 16) and ``COLLAPSE_KIT_TSNE=full`` (the committed t-SNE grid uses the full settings).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOKS = {f"{p.stem}.ipynb": p for p in sorted(HERE.glob("[0-9][0-9]_*.py"))}
MARKER = re.compile(r"^# %%( \[markdown\])?(.*)$")
MAGIC = re.compile(r"^# %[a-z]")
ATTR = re.compile(r'(\w+)=("[^"]*"|\[[^\]]*\])')


def parse(path: Path) -> list[tuple[str, dict, str]]:
    """(kind, attributes, source) of every ``# %%`` cell of a percent-format file."""
    cells = []
    for line in path.read_text().splitlines():
        m = MARKER.match(line)
        if m:
            attrs = {k: json.loads(v) for k, v in ATTR.findall(m.group(2))}
            cells.append(("markdown" if m.group(1) else "code", attrs, []))
        elif cells:
            cells[-1][2].append(line)
    out = []
    for kind, attrs, lines in cells:
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        else:  # IPython magics are commented out in the .py files (jupytext's convention)
            lines = [line[2:] if MAGIC.match(line) else line for line in lines]
        out.append((kind, attrs, "\n".join(lines).strip("\n")))
    return out


def build(name: str) -> nbformat.NotebookNode:
    shared = {a["name"]: (a, src) for _, a, src in parse(HERE / "_common.py")}
    cells = []
    for kind, attrs, source in parse(NOTEBOOKS[name]):
        if "include" in attrs:
            attrs, source = shared[attrs["include"]]
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        if "tags" in attrs:
            cell.metadata["tags"] = attrs["tags"]
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.language_info = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, *, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--execute", action="store_true", help="run and save with outputs")
    p.add_argument("only", nargs="*", help="name prefixes of the notebooks to write")
    args = p.parse_args(argv)
    os.environ.setdefault("COLLAPSE_KIT_PRESET", "tiny")
    os.environ.setdefault("COLLAPSE_KIT_TSNE", "full")
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # shared 2-core machine: no oversubscription
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for name in NOTEBOOKS:
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        nb, t0 = build(name), time.time()
        if args.execute:
            execute(nb)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(f"{name}: {(HERE / name).stat().st_size / 1e6:.2f} MB"
              + (f", executed in {time.time() - t0:.0f} s" if args.execute else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
