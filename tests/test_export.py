"""`collapse-kit export`: the table and its ids in four formats, round trips through analyze,
the raw log's original ids, and clean failures."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from collapse_kit.analyze import compute_metrics
from collapse_kit.cli import main
from collapse_kit.errors import UserError
from collapse_kit.export import export_table
from collapse_kit.io import load_embeddings
from tests.conftest import OFFICIAL_CKPT

ROOT = Path(__file__).resolve().parents[1]
SASREC = ROOT / "results/ml-100k-cpu-shuffled/runs/ml-100k/sasrec/s0-strict/sasrec.pt"


def _same_metrics(a, b):
    ma = compute_metrics(a, groups=("paper", "corrected"))
    mb = compute_metrics(b, groups=("paper", "corrected"))
    assert ma.keys() == mb.keys()
    for k in ma:
        if isinstance(ma[k], (list, tuple, np.ndarray)):
            np.testing.assert_array_equal(ma[k], mb[k])
        else:
            assert ma[k] == mb[k], k


def test_npy_round_trip_gives_the_same_table_and_analysis(tmp_path, capsys):
    assert main(["export", str(SASREC), "-o", str(tmp_path / "sasrec")]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [str(tmp_path / "sasrec.npy"), str(tmp_path / "sasrec.ids.tsv")]
    assert "ids: contiguous" in out.err
    E = load_embeddings(SASREC).table
    back = load_embeddings(tmp_path / "sasrec.npy", padding="keep").table
    np.testing.assert_array_equal(back, E)
    _same_metrics(back, E)
    lines = (tmp_path / "sasrec.ids.tsv").read_text().splitlines()
    assert lines[0].startswith("# id_kind: contiguous") and lines[1] == "row\titem_id"
    assert lines[2:] == [f"{r}\t{r + 1}" for r in range(E.shape[0])]


def test_safetensors_carry_the_ids_in_their_metadata(tmp_path, capsys):
    from safetensors import safe_open

    assert main(["export", str(OFFICIAL_CKPT), "-o", str(tmp_path / "a"), "--format",
                 "safetensors"]) == 0
    assert "ids: row" in capsys.readouterr().err  # a foreign file, no dataset: row indices
    path = tmp_path / "a.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["id_kind"] == "row" and json.loads(meta["item_ids"]) == list(range(1008))
    E = load_embeddings(OFFICIAL_CKPT).table  # the authors' table, padding row dropped
    np.testing.assert_array_equal(load_embeddings(path, padding="keep").table, E)
    # with the dataset it was trained on, row r is the bundled item r + 1
    assert main(["export", str(OFFICIAL_CKPT), "-o", str(tmp_path / "b.safetensors"),
                 "--format", "safetensors", "--dataset", "ml-100k"]) == 0
    with safe_open(str(tmp_path / "b.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["item_ids"]) == list(range(1, 1009))


def test_parquet_has_one_row_per_item_with_ids_metadata_and_vector(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    assert main(["export", str(SASREC), "-o", str(tmp_path / "t"), "--format", "parquet"]) == 0
    path = tmp_path / "t.parquet"
    frame = pd.read_parquet(path)
    E = load_embeddings(SASREC).table
    assert list(frame.columns[:3]) == ["item_id", "popularity", "genres"]
    assert frame["item_id"].tolist() == list(range(1, E.shape[0] + 1))
    np.testing.assert_array_equal(frame[[f"e{j}" for j in range(E.shape[1])]].to_numpy(), E)
    assert pq.read_schema(path).metadata[b"id_kind"] == b"contiguous"


def test_tsv_is_the_projector_pair_with_popularity_and_genres(tmp_path):
    from adrec.data import load_dataset
    from probes.labels import load_item_labels

    assert main(["export", str(SASREC), "-o", str(tmp_path / "proj"), "--format", "tsv"]) == 0
    E = load_embeddings(SASREC).table
    vectors = np.loadtxt(tmp_path / "proj" / "vectors.tsv", delimiter="\t")
    np.testing.assert_allclose(vectors, E, rtol=1e-6, atol=1e-9)  # 7 significant digits
    rows = [line.split("\t") for line in
            (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()]
    assert rows[0] == ["item_id", "popularity", "genres"] and len(rows) == E.shape[0] + 1
    ds = load_dataset("ml-100k")
    counts = Counter(int(i) for seq in ds.train for i in seq)
    counts.update(int(i) for i in ds.valid)
    counts.update(int(i) for i in ds.test)
    labels = load_item_labels("ml-100k-genres", E.shape[0])
    for item in (1, 2, 500, E.shape[0]):
        _, pop, genres = rows[item]
        assert int(pop) == counts[item]
        want = {n for n, on in zip(labels.names, labels.Y[item - 1]) if on}
        assert set(genres.split("|")) - {""} == want


def _raw_log(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(30):
        for t, i in enumerate(rng.choice(12, size=7, replace=False)):
            lines.append(f"user{u},ASIN-{i:03d},{1000 + t}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_raw_log_keeps_its_original_item_ids_through_training_and_export(tmp_path, capsys):
    import pandas as pd

    from adrec.config import TrainConfig
    from adrec.data import load_dataset
    from adrec.pipeline import train_model

    log = _raw_log(tmp_path)
    ds = load_dataset(log, k_core=2)
    raw = pd.read_csv(log).sort_values(["user_id", "timestamp"], kind="stable")
    for u, (user, items) in enumerate(raw.groupby("user_id", sort=True)["item_id"]):
        mapped = [ds.item_ids[i - 1] for i in [*ds.train[u], ds.valid[u], ds.test[u]]]
        assert mapped == items.tolist()  # item i of the dataset is raw id item_ids[i - 1]
    result = train_model("sasrec", ds, TrainConfig(epochs=1, batch_size=16), tmp_path / "run",
                         model_args={"hidden": 8, "n_heads": 1, "n_blocks": 1}, progress=False)
    assert main(["export", str(result.checkpoint), "-o", str(tmp_path / "e.npy")]) == 0
    assert "ids: original" in capsys.readouterr().err
    lines = (tmp_path / "e.ids.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in lines[2:]] == ds.item_ids


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    assert main(["export", str(SASREC), "-o", str(tmp_path / "no" / "such" / "x.npy")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert main(["export", str(SASREC), "-o", str(tmp_path / "x"), "--dataset", "baby"]) == 2
    assert "has 4731 items but the table has 1008 rows" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["export", str(SASREC), "-o", str(tmp_path / "file"), "--format", "tsv"]) == 2
    assert "is a file" in capsys.readouterr().err
    # a failure while renaming the second file leaves everything as it was: new files gone,
    # an existing export restored, no temporary or backup behind
    import os

    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) % 2 == 0:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError):
        export_table(np.ones((3, 2)), [1, 2, 3], tmp_path / "proj", "tsv", id_kind="contiguous")
    assert not (tmp_path / "proj").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "vectors.tsv").write_text("old vectors")
    (old / "metadata.tsv").write_text("old metadata")
    calls.clear()
    with pytest.raises(OSError):
        export_table(np.ones((3, 2)), [1, 2, 3], old, "tsv", id_kind="contiguous")
    monkeypatch.setattr(os, "replace", real)
    assert (old / "vectors.tsv").read_text() == "old vectors"
    assert (old / "metadata.tsv").read_text() == "old metadata"
    assert sorted(p.name for p in old.iterdir()) == ["metadata.tsv", "vectors.tsv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "old"]


def test_export_table_checks_its_inputs(tmp_path):
    with pytest.raises(UserError, match="2 ids for a table of 3 rows"):
        export_table(np.ones((3, 2)), [1, 2], tmp_path / "a", "npy", id_kind="row")
    with pytest.raises(UserError, match="unknown export format 'csv'"):
        export_table(np.ones((3, 2)), [1, 2, 3], tmp_path / "a", "csv", id_kind="row")
    with pytest.raises(UserError, match="metadata column 'pop' has 1 values for 3 rows"):
        export_table(np.ones((3, 2)), [1, 2, 3], tmp_path / "a", "tsv", id_kind="row",
                     metadata={"pop": [1]})
    assert list(tmp_path.iterdir()) == []


def test_users_are_the_vectors_behind_the_evaluation(tmp_path, capsys):
    """--what users: the test users' representations; with the item table they give back the
    ranks, hence the metrics, that `collapse-kit evaluate` prints (the authors' stage-1 model)."""
    import torch

    from adrec.evaluate import aggregate, ranking_metrics, target_ranks

    common = ["--what", "users", "--model", "stage1", "--dataset", "ml-100k"]
    assert main(["evaluate", str(OFFICIAL_CKPT), "--model", "stage1", "--dataset", "ml-100k",
                 "--json"]) == 0
    want = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["export", str(OFFICIAL_CKPT), "-o", str(tmp_path / "u"), *common]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [str(tmp_path / "u.npy"), str(tmp_path / "u.ids.tsv")]
    assert "representations of the 938 test users (938x128" in out.err
    assert "ids: user-index" in out.err
    reps = np.load(tmp_path / "u.npy")
    table = load_embeddings(OFFICIAL_CKPT, padding="keep").table  # row 0 = padding
    from adrec.data import load_dataset

    ds = load_dataset("ml-100k")
    ranks = target_ranks(torch.from_numpy(reps) @ torch.from_numpy(table).T,
                         torch.as_tensor(ds.test), exclude_padding=True).numpy()
    got = aggregate(ranking_metrics(ranks), "strict")
    for metric, value in got.items():
        assert want["test"][metric] == pytest.approx(value, abs=1e-9), metric
    lines = (tmp_path / "u.ids.tsv").read_text().splitlines()
    assert lines[0].startswith("# id_kind: user-index") and lines[1] == "row\tuser_id"
    assert lines[2:] == [f"{u}\t{u}" for u in range(938)]
    # the valid users: history = train only, target = the valid item
    assert main(["export", str(OFFICIAL_CKPT), "-o", str(tmp_path / "v"), "--format", "tsv",
                 "--split", "valid", *common]) == 0
    rows = [line.split("\t") for line in (tmp_path / "v" / "metadata.tsv").read_text().split("\n")
            if line]
    assert rows[0] == ["user_id", "history_length", "valid_item"]
    assert rows[1:4] == [[str(u), str(len(ds.train[u])), str(ds.valid[u])] for u in range(3)]


def test_users_of_a_raw_log_keep_their_original_ids_and_a_diffusion_seed(tmp_path, capsys):
    import pandas as pd
    import torch
    from safetensors import safe_open

    from adrec.config import TrainConfig
    from adrec.data import load_dataset
    from adrec.evaluate import user_representations
    from adrec.pipeline import train_model

    log = _raw_log(tmp_path)
    ds = load_dataset(log, k_core=2)
    result = train_model("diffurec", ds, TrainConfig(epochs=1, batch_size=16), tmp_path / "run",
                         model_args={"hidden": 8, "n_heads": 1, "n_blocks": 1, "steps": 4},
                         progress=False)
    ckpt = str(result.checkpoint)
    assert main(["export", ckpt, "-o", str(tmp_path / "u"), "--what", "users", "--dataset",
                 str(log), "--format", "parquet", "--seed", "3"]) == 0
    assert "ids: user-original" in capsys.readouterr().err
    frame = pd.read_parquet(tmp_path / "u.parquet")
    raw = pd.read_csv(log).sort_values(["user_id", "timestamp"], kind="stable")
    last = raw.groupby("user_id", sort=True)["item_id"].last()
    assert frame["user_id"].tolist() == sorted(raw["user_id"].unique()) == ds.user_ids
    assert frame["test_item"].tolist() == last.tolist()  # the raw id of each user's last item
    from adrec.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(ckpt))
    want = user_representations(model, ds, "test", seed=3)
    np.testing.assert_array_equal(frame[[f"e{j}" for j in range(8)]].to_numpy(), want)
    assert main(["export", ckpt, "-o", str(tmp_path / "s"), "--what", "users", "--dataset",
                 str(log), "--format", "safetensors"]) == 0  # seed 0: other noise, other x0
    capsys.readouterr()
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["user_ids"]) == ds.user_ids
        seed0 = f.get_tensor("user_representations").numpy()
    np.testing.assert_array_equal(seed0, user_representations(model, ds, "test", seed=0))
    assert not np.allclose(seed0, want)
    assert torch.isfinite(torch.from_numpy(seed0)).all()


def test_user_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    stripped = ROOT / "results/ml-100k-cpu-shuffled/runs/ml-100k/adrec/s0-strict/best.pt"
    cases = [
        ([str(stripped), "--what", "users"], "carries no model weights"),
        ([str(OFFICIAL_CKPT), "--what", "users"], "name the model and data"),
        ([str(OFFICIAL_CKPT), "--what", "users", "--model", "adrec", "--dataset", "ml-100k"],
         "load into --model stage1 or sasrec"),
        ([str(OFFICIAL_CKPT), "--what", "users", "--model", "stage1", "--dataset", "baby"],
         "has 1008 items but baby has 4731"),
        ([str(OFFICIAL_CKPT), "--what", "users", "--model", "stage1", "--dataset", "ml-100k",
          "--key", "item_embedding.weight"], "--what users computes the representations"),
        ([str(OFFICIAL_CKPT), "--model", "stage1"], "--model applies to --what users only"),
    ]
    for argv, message in cases:
        assert main(["export", *argv, "-o", str(tmp_path / "x")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []
