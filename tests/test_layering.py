"""The one-way layering of the packages (README: Architecture), checked on every import statement,
including those inside functions:

- ``adrec`` (models, trainer, checkpoints) imports neither ``collapse_kit`` nor ``probes``;
- ``collapse_kit``'s library modules import neither ``adrec`` nor ``probes``;
- ``probes`` imports only ``collapse_kit.errors`` and ``collapse_kit.metrics`` of the project;
- ``collapse_kit/cli.py``, ``collapse_kit/commands/`` and ``collapse_kit/study/`` are the
  composition root: the only code allowed to import all three.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adrec", "collapse_kit", "probes")
COMPOSITION_ROOT = ("collapse_kit/cli.py", "collapse_kit/commands/", "collapse_kit/study/")


def project_imports(path: Path, package: str | None = None) -> set[str]:
    """Dotted names of the project modules ``path`` imports (``from a.b import c`` -> ``a.b.c``
    and ``a.b``; relative imports resolved against the file's package, by default the one its
    place in the checkout gives)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def in_root(path: Path) -> bool:
    return any(rel(path) == r or rel(path).startswith(r) for r in COMPOSITION_ROOT)


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from adrec.train import train_stage\n"
                      "from .errors import UserError\nimport probes.linear\nimport numpy\n")
    assert project_imports(sample, package="collapse_kit") == {
        "adrec.train", "adrec.train.train_stage", "collapse_kit.errors",
        "collapse_kit.errors.UserError", "probes.linear"}


@pytest.mark.parametrize("path", files("adrec"), ids=rel)
def test_adrec_imports_nothing_else(path):
    bad = {m for m in project_imports(path) if m.split(".")[0] in ("collapse_kit", "probes")}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [p for p in files("collapse_kit") if not in_root(p)], ids=rel)
def test_collapse_kit_library_imports_neither_adrec_nor_probes(path):
    bad = {m for m in project_imports(path) if m.split(".")[0] in ("adrec", "probes")}
    assert not bad, f"{rel(path)} imports {sorted(bad)}; only cli.py, commands/ and study/ may"


@pytest.mark.parametrize("path", files("probes"), ids=rel)
def test_probes_import_only_errors_and_metrics_of_collapse_kit(path):
    allowed = ("collapse_kit.errors", "collapse_kit.metrics")
    bad = {m for m in project_imports(path) if m.split(".")[0] == "adrec"
           or (m.split(".")[0] == "collapse_kit" and m != "collapse_kit"
               and not m.startswith(allowed))}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


def test_the_composition_root_exists_and_is_where_the_packages_meet():
    meeting = {rel(p) for p in files("collapse_kit")
               if {m.split(".")[0] for m in project_imports(p)} >= {"adrec", "probes"}}
    assert meeting, "no module imports both adrec and probes: the walk is broken"
    assert all(any(m == r or m.startswith(r) for r in COMPOSITION_ROOT) for m in meeting)
