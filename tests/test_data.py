"""Data loading, bundled statistics, raw-log import and leave-one-out properties."""
import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from adrec.data import (BatchIterator, build_from_interactions, eval_histories, left_pad,
                        load_dataset, read_interactions, training_pairs)

# ../shared/data/README.md, the paper's Table 7 for the bundled sets
TABLE = {
    "baby": (11761, 4731, 92823, 7.89),
    "beauty": (10553, 6086, 94148, 8.92),
    "ml-100k": (938, 1008, 54413, 58.01),
    "sports": (22686, 12301, 185718, 8.19),
    "toys": (11268, 7309, 95420, 8.47),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_bundled_stats_match_table(name):
    s = load_dataset(name).stats()
    assert (s["users"], s["items"], s["interactions"], s["avg_length"]) == TABLE[name]


def test_bundled_ids_are_contiguous_and_loo():
    ds = load_dataset("ml-100k")
    seen = set(np.concatenate(ds.train)) | set(ds.valid) | set(ds.test)
    assert seen == set(range(1, ds.n_items + 1))
    for s, v, t in zip(ds.train, ds.valid, ds.test):
        assert v not in s and t not in s  # targets never in the history (section 1.1)


def test_training_pairs_shift_by_one():
    ds = load_dataset("ml-100k")
    hists, tgts = training_pairs(ds, 50)
    assert len(hists) == ds.n_users
    for s, h, t in zip(ds.train[:50], hists, tgts):
        assert len(h) == min(len(s) - 1, 50)
        np.testing.assert_array_equal(h, s[:-1][-50:])
        np.testing.assert_array_equal(t, s[1:][-50:])
        np.testing.assert_array_equal(h[1:], t[:-1])  # target = history shifted left


@pytest.mark.parametrize("name,count", [("ml-100k", 30619), ("beauty", 61379)])
def test_prefix_split_counts(name, count):
    """Section 1.3: DiffuRec's truncate-then-split sample counts on the bundled data."""
    hists, tgts = training_pairs(load_dataset(name), 50, prefixes=True)
    assert len(hists) == count
    assert all(t[-1] > 0 and (t[:-1] == 0).all() for t in tgts[:200])


def test_eval_histories_valid_and_test():
    ds = load_dataset("ml-100k")
    h, y = eval_histories(ds, "valid", 50)
    np.testing.assert_array_equal(h[3], ds.train[3]) and np.testing.assert_array_equal(y, ds.valid)
    h, y = eval_histories(ds, "test", 50)
    assert h[3][-1] == ds.valid[3] and len(h[3]) == len(ds.train[3]) + 1
    np.testing.assert_array_equal(y, ds.test)


def test_eval_histories_refuse_the_train_split():
    ds = load_dataset("ml-100k")
    with pytest.raises(ValueError, match="split"):
        eval_histories(ds, "train", 50)


def test_left_pad_keeps_last_items():
    out = left_pad([np.array([1, 2, 3, 4]), np.array([5])], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5]]
    assert left_pad([np.array([1, 2])], 3, width=2).tolist() == [[1, 2]]


def test_bucketed_batches_cover_every_sample_once():
    ds = load_dataset("beauty")
    hists, tgts = training_pairs(ds, 50)
    it = BatchIterator(hists, tgts, max_len=50, batch_size=512,
                       generator=torch.Generator().manual_seed(0), bucket=True)
    rows = 0
    widths = []
    for b in it:
        rows += b.history.shape[0]
        widths.append(b.history.shape[1])
        assert b.offset + b.history.shape[1] == 50
        assert (b.history[:, -1] > 0).all()  # no all-padding sample
    assert rows == len(hists)
    assert np.median(widths) < 20  # short Amazon sequences are not padded to 50


def test_constant_totals_weigh_every_token_the_same_over_an_epoch():
    """batching=bucket-constant: bucketed batches whose loss means divide by the epoch's mean
    batch totals, so a token's weight 1 / n_tokens is the same in every batch (under plain
    bucketing a short batch's tokens weigh several times more) and an epoch's weights sum to
    the number of batches, as the per-batch means of a shuffle do."""
    from adrec.models.sasrec import SASRec, SASRecArgs

    ds = load_dataset("baby")
    hists, tgts = training_pairs(ds, 50)
    tokens = sum(int(np.count_nonzero(t[-50:])) for t in tgts)
    it = BatchIterator(hists, tgts, max_len=50, batch_size=512,
                       generator=torch.Generator().manual_seed(0), bucket=True,
                       constant_totals=True)
    plain = BatchIterator(hists, tgts, max_len=50, batch_size=512,
                          generator=torch.Generator().manual_seed(0), bucket=True)
    batches = list(it)
    assert len({b.totals for b in batches}) == 1
    assert batches[0].n_tokens == pytest.approx(tokens / len(it))
    assert batches[0].n_rows == pytest.approx(len(hists) / len(it))
    own = [int((b.target > 0).sum()) for b in batches]
    assert sum(k / b.n_tokens for k, b in zip(own, batches)) == pytest.approx(len(it))
    plain = list(plain)  # the same generator seed: the same first epoch
    weights = [1 / b.n_tokens for b in plain]
    assert max(weights) / min(weights) > 3  # what the constant totals remove
    for a, b in zip(batches, plain):  # the same bucketed batches, only the divisor differs
        assert torch.equal(a.history, b.history)
    # a micro-batch keeps the constant divisor, so the SASRec+ loss adds up to the batch's
    model = SASRec(SASRecArgs(hidden=16, n_heads=2), ds.n_items).eval()
    big = max(batches, key=lambda b: b.history.shape[0] * b.history.shape[1])
    whole = float(model.loss(big)["loss"])
    parts = sum(float(model.loss(m)["loss"]) for m in big.split_cells(800))
    assert parts == pytest.approx(whole, rel=1e-5)
    from adrec.data import Batch

    own_mean = float(model.loss(Batch(big.history, big.target, big.offset))["loss"])
    k = int((big.target > 0).sum())
    assert whole * big.n_tokens == pytest.approx(own_mean * k, rel=1e-5)  # same sum, other divisor


def test_batches_are_seeded():
    ds = load_dataset("ml-100k")
    h, t = training_pairs(ds, 50)
    a = [b.history for b in BatchIterator(h, t, max_len=50, batch_size=256,
                                          generator=torch.Generator().manual_seed(3))]
    b = [b.history for b in BatchIterator(h, t, max_len=50, batch_size=256,
                                          generator=torch.Generator().manual_seed(3))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def _log(rows):
    return pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])


def test_raw_log_kcore_order_and_split():
    rows = []
    # user a (sorted first) fixes the item ids: x1..x6 -> 1..6 by first appearance
    for k, item in enumerate(["x1", "x2", "x3", "x4", "x5", "x6"]):
        rows.append(("a", item, k, 5))
    # user b: x4 and x3 share timestamp 2; the stable tie-break keeps file order (x4 first)
    for item, ts in [("x6", 0), ("x5", 1), ("x4", 2), ("x3", 2), ("x2", 3)]:
        rows.append(("b", item, ts, 5))
    rows.append(("c", "x1", 0, 5))  # user c has 1 interaction: no valid/test possible
    ds = build_from_interactions(_log(rows), k_core=1)
    assert ds.n_users == 2 and ds.n_items == 6
    full_b = ds.train[1].tolist() + [int(ds.valid[1]), int(ds.test[1])]
    assert full_b == [6, 5, 4, 3, 2]
    assert ds.train[0].tolist() == [1, 2, 3, 4] and (ds.valid[0], ds.test[0]) == (5, 6)


def test_iterative_kcore_removes_cascades():
    # u0..u4 hold i0..i4; z is held by u0..u3 and u5; u5 holds only z, i0, i1, i2 (4 items).
    # Pass 1 drops u5; then z has 4 users and must go too (iterative, not one pass).
    holdings = {f"u{u}": [f"i{j}" for j in range(5)] for u in range(5)}
    for u in range(4):
        holdings[f"u{u}"].append("z")
    holdings["u5"] = ["z", "i0", "i1", "i2"]
    rows, t = [], 0
    for user, items in holdings.items():
        for it in items:
            rows.append((user, it, t, 5))
            t += 1
    ds = build_from_interactions(_log(rows), k_core=5)
    assert ds.n_items == 5 and ds.n_users == 5


def test_rating_threshold_keeps_strictly_greater():
    rows = [(f"u{u}", f"i{i}", i, 3 if i == 0 else 4) for u in range(5) for i in range(6)]
    ds = build_from_interactions(_log(rows), rating_threshold=3, k_core=5)
    assert ds.n_items == 5  # item i0 has rating 3 everywhere: dropped


def test_read_csv_log(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,rating,timestamp\n1,10,5,100\n1,11,4,200\n")
    df = read_interactions(csv)
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]


def test_read_recbole_atomic_file(tmp_path):
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                     "1\t10\t5\t100\n")
    assert read_interactions(inter)["timestamp"].tolist() == [100.0]


def test_load_a_user_interaction_log(tmp_path):
    rows = "\n".join(f"u{u},i{i},{u * 10 + i}" for u in range(6) for i in range(7))
    (tmp_path / "log.csv").write_text("user,item,timestamp\n" + rows + "\n")
    ds = load_dataset(tmp_path / "log.csv")
    assert ds.n_users == 6 and ds.n_items == 7 and len(ds.train[0]) == 5


def test_load_a_user_sequences_file(tmp_path):
    seq = tmp_path / "seqs.tsv.gz"
    with gzip.open(seq, "wt") as f:
        f.write("user\ttrain\tvalid\ttest\n0\t1 2 3\t4\t5\n1\t2 3\t1\t4\n")
    ds = load_dataset(seq)
    assert ds.n_items == 5 and ds.train[1].tolist() == [2, 3]


def test_bad_dataset_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown dataset"):
        load_dataset("no-such-set")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="user"):
        load_dataset(bad)
    trunc = tmp_path / "t.tsv.gz"
    data = gzip.compress(b"user\ttrain\tvalid\ttest\n0\t1 2\t3\t4\n" * 50)
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated|cannot read"):
        load_dataset(trunc)
    zero = tmp_path / "z.tsv"
    zero.write_text("user\ttrain\tvalid\ttest\n0\t0 2\t3\t4\n")
    with pytest.raises(ValueError, match="start at 1"):
        load_dataset(zero)


def test_default_batches_are_a_uniform_shuffle_of_the_users():
    """The default (TrainConfig.batching = "random"): every user exactly once per epoch, a new
    partition every epoch, and per-batch token counts as concentrated as a random partition's
    (each batch's mean length within 4.5 sd of the population mean, the sd of a simple random
    sample without replacement); the opt-in bucketing fails that last check by far."""
    from adrec.config import TrainConfig

    assert TrainConfig().batching == "random"
    ds = load_dataset("baby")
    hists, tgts = training_pairs(ds, 50)
    lengths = np.array([len(h) for h in hists])
    n, bs = len(hists), 512
    mu, sd = lengths.mean(), lengths.std()
    se = sd / np.sqrt(bs) * np.sqrt((n - bs) / (n - 1))
    users = sorted(tuple(h.tolist()) for h in hists)
    it = BatchIterator(hists, tgts, max_len=50, batch_size=bs,
                       generator=torch.Generator().manual_seed(0))
    partitions = []
    for _ in range(2):
        sizes, means, seen, partition = [], [], [], set()
        for b in it:
            assert b.offset + b.history.shape[1] == 50
            real = (b.history > 0).sum(1)
            sizes.append(len(real))
            means.append(float(real.float().mean()))
            rows = [tuple(r[r > 0].tolist()) for r in b.history]
            seen += rows
            partition.add(tuple(sorted(rows)))
        assert sorted(seen) == users  # each user once per epoch
        assert sizes[:-1] == [bs] * (len(sizes) - 1)
        full = np.array(means[:-1])  # the last batch is smaller
        assert np.abs(full - mu).max() < 4.5 * se, (full, mu, se)
        partitions.append(partition)
    assert partitions[0].isdisjoint(partitions[1])  # composition changes between epochs
    bucketed = BatchIterator(hists, tgts, max_len=50, batch_size=bs,
                             generator=torch.Generator().manual_seed(0), bucket=True)
    bmeans = np.array([float((b.history > 0).sum(1).float().mean()) for b in bucketed
                       if len(b.history) == bs])
    assert np.abs(bmeans - mu).max() > 10 * se  # what the default no longer does


def test_split_cells_sorts_rows_and_trims_each_pass():
    ds = load_dataset("beauty")
    hists, tgts = training_pairs(ds, 50)
    b = next(iter(BatchIterator(hists, tgts, max_len=50, batch_size=512,
                                generator=torch.Generator().manual_seed(1))))
    parts = b.split_cells(3200)
    assert len(parts) < 512 * 50 // 3200  # short rows share passes
    rows = []
    for p in parts:
        w = p.history.shape[1]
        assert p.history.shape[0] * w <= 3200 or p.history.shape[0] == 1
        assert p.offset + w == 50 and (p.history[:, -w:] > 0).any(0).all()  # trimmed to longest
        assert (p.n_rows, p.n_tokens) == (b.n_rows, b.n_tokens)
        rows += [tuple(r[r > 0].tolist()) for r in p.history]
        assert (p.target > 0).sum() == ((p.history > 0) & (p.target > 0)).sum()
    assert sorted(rows) == sorted(tuple(r[r > 0].tolist()) for r in b.history)
    full = b.split_cells(3200, trim=False)
    assert {p.history.shape[1] for p in full} == {b.history.shape[1]}
    assert sum(len(p.history) for p in full) == 512


def test_split_cells_token_budget_bounds_real_tokens_per_pass():
    ds = load_dataset("beauty")
    hists, tgts = training_pairs(ds, 50)
    b = next(iter(BatchIterator(hists, tgts, max_len=50, batch_size=512,
                                generator=torch.Generator().manual_seed(1))))
    parts = b.split_cells(25600, tokens=600)
    for p in parts:
        real = int((p.history > 0).sum())
        assert real <= 600 or p.history.shape[0] == 1
        assert p.history.shape[0] * p.history.shape[1] <= 25600
    assert sum(len(p.history) for p in parts) == 512
    assert sum(int((p.history > 0).sum()) for p in parts) == int((b.history > 0).sum())
    assert len(parts) == len(b.split_cells(25600, tokens=600))
    assert len(b.split_cells(25600)) < len(parts)  # the token limit, not the cells, cuts here
    assert [p.history.shape for p in b.split_cells(3200, tokens=None)] == \
        [p.history.shape for p in b.split_cells(3200)]
