"""Pack finished run folders into light archives (for bringing runs back from a GPU machine).

Usage: python scripts/pack_runs.py RUNS_ROOT OUT_DIR

For every run folder under RUNS_ROOT/**/runs/<dataset>/<name>/<seed-protocol>/ it keeps the
JSON-lines logs, train.out and every finished checkpoint (*.pt, not *.resume.pt) with its model
weights stripped (adrec.checkpoint.strip_weights: metrics, config and item table stay). The item
table itself is kept only where the reports need it: the seed-0 runs, strict and official (Table
5 falls back to the official run where a strict table is missing), of every model on ML-100K
and of the main models elsewhere (SASRec+, DiffuRec, DreamRec, and ADRec's best.pt; an
ablation's table is not analysed); elsewhere it is replaced by an empty (0, d) tensor and
``table_stripped`` is set.
One .tar.gz per top folder, dataset and model (``TOP-DATASET-NAME.tar.gz``): the largest, a
Sports table of 12,301 x 128 with its stripped stages, is about 6 MB, well under the 16 MB that
one file brought back from a device machine may have (one archive per dataset did not fit
Sports' four tables).
"""
from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adrec.checkpoint import atomic_save, strip_weights  # noqa: E402


def keep_table(dataset: str, name: str, run: str, ckpt: str) -> bool:
    if not run.startswith(("s0-strict", "s0-official")):
        return False
    if dataset == "ml-100k":
        return True
    return name in ("sasrec", "diffurec", "dreamrec") or (name == "adrec" and ckpt == "best.pt")


def main(root: str, out: str) -> None:
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {}
    for run_dir in sorted(root.glob("*/runs/*/*/*")):
        if run_dir.is_dir():
            top, dataset, name = run_dir.parts[-5], run_dir.parts[-3], run_dir.parts[-2]
            groups.setdefault(f"{top}-{dataset}-{name}", []).append(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for group, run_dirs in groups.items():
            archive = out / f"{group}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                for run_dir in run_dirs:
                    rel = run_dir.relative_to(root)
                    for f in sorted(run_dir.iterdir()):
                        if f.name.endswith(".resume.pt") or f.name.startswith("."):
                            continue
                        if f.suffix == ".pt":
                            ck = strip_weights(torch.load(f, map_location="cpu",
                                                          weights_only=True))
                            if not keep_table(rel.parts[2], rel.parts[3], rel.parts[4], f.name):
                                d = ck["item_embeddings"].shape[1]
                                ck["item_embeddings"] = torch.empty(0, d)
                                ck["table_stripped"] = True
                            light = Path(tmp) / "light.pt"
                            atomic_save(ck, light)
                            tar.add(light, arcname=str(rel / f.name))
                        else:
                            tar.add(f, arcname=str(rel / f.name))
            print(f"{archive} {archive.stat().st_size / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
