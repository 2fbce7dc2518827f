"""Prompts from .txt / .jsonl tokenised with the folder's tokenizer: unpadded, truncated, hostile lines refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from actaudit.data.streams import by_length
from tests.hf import tinymodels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text") / "opt"
    tinymodels.opt(out, steps=0)
    return out


def _audit(model: Path, calib: Path, *flags: str) -> tuple[int, dict | str]:
    r = CliRunner().invoke(
        cli, ["audit", str(model), "--calib", str(calib), "--format", "json", "--per-unit", *flags]
    )
    return r.exit_code, (json.loads(r.stdout) if r.exit_code == 0 else r.stderr)


def _elements(report: dict) -> list[int]:
    return [s["coverage"]["elements_per_unit"] for s in report["sites"]]


def test_jsonl_equals_the_same_prompts_as_text(folder: Path, tmp_path: Path) -> None:
    prompts = tinymodels.prompts(9, seed=3)
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    lines = [json.dumps(p) if i % 2 else json.dumps({"text": p, "id": i}) for i, p in enumerate(prompts)]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    code, txt = _audit(folder, tmp_path / "p.txt")
    assert code == 0, txt
    code, jsonl = _audit(folder, tmp_path / "p.jsonl")
    assert code == 0, jsonl
    assert isinstance(txt, dict) and isinstance(jsonl, dict)
    tokens = sum(len(p.split()) + 1 for p in prompts)  # one [BOS] per prompt, one id per word
    assert _elements(txt) == _elements(jsonl) == [tokens] * tinymodels.LAYERS
    for a, b in zip(txt["sites"], jsonl["sites"], strict=True):
        assert a["per_unit"]["fire_rate"] == b["per_unit"]["fire_rate"]


def test_max_length_truncates_each_prompt(folder: Path, tmp_path: Path) -> None:
    prompts = tinymodels.prompts(7, seed=4)
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    code, report = _audit(folder, tmp_path / "p.txt", "--max-length", "4")
    assert code == 0 and isinstance(report, dict), report
    assert _elements(report) == [sum(min(len(p.split()) + 1, 4) for p in prompts)] * tinymodels.LAYERS


def test_text_needs_the_models_tokenizer(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("w1 w2 w3\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        (bare / f).write_bytes((folder / f).read_bytes())
    code, err = _audit(bare, tmp_path / "p.txt")
    assert code == 2 and "tokenizer.json" in str(err)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"w1 w2\n" + b"w3 " * 400_000 + b"\n", "more than"),
        (b"w1 w2\n\xff\xfe bad\n", "not UTF-8"),
        (b"", "no batches"),
    ],
)
def test_hostile_text_files(folder: Path, tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "p.txt").write_bytes(content)
    code, err = _audit(folder, tmp_path / "p.txt")
    assert code == 2 and says in str(err)


def test_bad_jsonl_line_is_named(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('"w1 w2"\n{"prompt": 3}\n')
    code, err = _audit(folder, tmp_path / "p.jsonl")
    assert code == 2 and "p.jsonl:2" in str(err)


def test_by_length_never_pads_and_stays_within_its_budget() -> None:
    rng = np.random.default_rng(0)
    seqs = [np.full(int(n), i, dtype=np.int64) for i, n in enumerate(rng.integers(1, 9, 200))]
    for budget in (1 << 20, 64):  # the second forces early, smaller batches
        out = list(by_length(iter(seqs), 5, pending_bytes=budget))
        assert all(b.ndim == 2 and b.shape[0] <= 5 for b in out)
        got = sorted(int(row[0]) for b in out for row in b)
        assert got == list(range(200))
        assert all(len(seqs[int(row[0])]) == b.shape[1] for b in out for row in b)


def test_attention_mask_of_padded_arrays_is_honoured(folder: Path, tmp_path: Path) -> None:
    """Padded token ids with their mask (left and right padding) count exactly the tokens of the text file."""
    from tokenizers import Tokenizer

    prompts = tinymodels.prompts(10, seed=6)
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    seqs = [tok.encode(p).ids for p in prompts]
    width = max(map(len, seqs))
    ids = np.zeros((len(seqs), width), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        at = slice(0, len(s)) if i % 2 else slice(width - len(s), width)  # right, then left padding
        ids[i, at], mask[i, at] = s, 1
    np.savez(tmp_path / "padded.npz", input_ids=ids, attention_mask=mask)
    code, text = _audit(folder, tmp_path / "p.txt")
    assert code == 0 and isinstance(text, dict), text
    code, padded = _audit(folder, tmp_path / "padded.npz", "--batch-size", "4")
    assert code == 0 and isinstance(padded, dict), padded
    assert _elements(padded) == _elements(text) == [sum(map(len, seqs))] * tinymodels.LAYERS
    for a, b in zip(text["sites"], padded["sites"], strict=True):
        assert a["dead_units"] == b["dead_units"]
        np.testing.assert_allclose(a["per_unit"]["fire_rate"], b["per_unit"]["fire_rate"], atol=1e-6)
    assert "padding removed" in padded["calibration"]["source"]
    # The same ids without their mask: every padded position would count.
    np.save(tmp_path / "ids.npy", ids)
    code, unmasked = _audit(folder, tmp_path / "ids.npy")
    assert code == 0 and isinstance(unmasked, dict)
    assert _elements(unmasked) == [ids.size] * tinymodels.LAYERS


def test_a_mask_that_is_not_zeros_and_ones_is_refused(folder: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", input_ids=np.ones((2, 4), np.int64), attention_mask=np.full((2, 4), 2))
    code, err = _audit(folder, tmp_path / "bad.npz")
    assert code == 2 and "attention_mask" in str(err)
