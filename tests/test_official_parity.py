"""The authors' shipped stage-1 checkpoint reproduces official-implementation.md section 3.4."""
import json

import pytest

from collapse_kit.cli import main

pytestmark = pytest.mark.guards_readme  # README: the authors' checkpoint's numbers


def _evaluate(capsys, ckpt, *extra):
    assert main(["evaluate", str(ckpt), "--model", "stage1", "--dataset", "ml-100k", "--json",
                 *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_official_protocol_and_mask_batch_averaged(capsys, official_ckpt):
    r = _evaluate(capsys, official_ckpt, "--protocol", "official", "--attention-mask", "official")
    assert r["test"]["HR@10"] == pytest.approx(10.966, abs=0.01)
    assert r["test"]["NDCG@10"] == pytest.approx(5.515, abs=0.01)
    assert r["test"]["HR@20"] == pytest.approx(19.587, abs=0.01)


def test_official_mask_per_user(capsys, official_ckpt):
    r = _evaluate(capsys, official_ckpt, "--attention-mask", "official")
    assert r["test"]["HR@10"] == pytest.approx(10.874, abs=0.01)
    assert r["test"]["NDCG@10"] == pytest.approx(5.449, abs=0.01)
    assert r["valid"]["HR@10"] == pytest.approx(10.98, abs=0.01)
    assert r["valid"]["NDCG@10"] == pytest.approx(5.47, abs=0.01)


def test_correct_mask_per_user(capsys, official_ckpt):
    r = _evaluate(capsys, official_ckpt)
    assert r["test"]["HR@10"] == pytest.approx(10.13, abs=0.01)
    assert r["test"]["NDCG@10"] == pytest.approx(5.03, abs=0.01)
