"""--tokenizer DIR: text calibration for a model folder that ships no tokenizer.json.

The folder without a tokenizer, audited with ``--tokenizer`` naming a local folder that holds
the same tokenizer.json, gives exactly the counts of the folder that holds it. A name that is
no local folder (a hub name) is never fetched: exit 2 with the fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from actaudit.cli import cli
from tests.hf import tinymodels


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hftok")
    tinymodels.opt(root / "full", steps=5)
    bare = root / "bare"
    shutil.copytree(root / "full", bare)
    (bare / "tokenizer.json").unlink()
    tok = root / "tok"
    tok.mkdir()
    shutil.copyfile(root / "full" / "tokenizer.json", tok / "tokenizer.json")
    (root / "p.txt").write_text("\n".join(tinymodels.prompts(12, seed=3)))
    return {"root": root, "full": root / "full", "bare": bare, "tok": tok, "calib": root / "p.txt"}


def audit(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["audit", *args, "--format", "json", "--per-unit"])
    return r.exit_code, r.stdout, r.stderr


def test_tokenizer_folder_gives_the_counts_of_the_folder_that_holds_it(folders: dict[str, Path]) -> None:
    code, out, err = audit(str(folders["full"]), "--calib", str(folders["calib"]))
    assert code == 0, err
    code2, out2, err2 = audit(
        str(folders["bare"]), "--calib", str(folders["calib"]), "--tokenizer", str(folders["tok"])
    )
    assert code2 == 0, err2
    a, b = json.loads(out), json.loads(out2)
    assert b["calibration"]["samples"] == a["calibration"]["samples"] == 12
    assert str(folders["tok"] / "tokenizer.json") in b["calibration"]["source"]
    for x, y in zip(a["sites"], b["sites"], strict=True):
        assert x["dead_units"] == y["dead_units"]
        assert x["per_unit"]["fire_rate"] == y["per_unit"]["fire_rate"]
        assert x["coverage"]["elements_per_unit"] == y["coverage"]["elements_per_unit"]


def test_folder_without_tokenizer_says_how_to_give_one(folders: dict[str, Path]) -> None:
    code, _, err = audit(str(folders["bare"]), "--calib", str(folders["calib"]))
    assert code == 2
    assert "has no tokenizer.json" in err and "--tokenizer DIR" in err
    assert "Traceback" not in err


def test_hub_name_is_never_fetched(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folders["root"])
    code, _, err = audit(str(folders["bare"]), "--calib", str(folders["calib"]), "--tokenizer", "gpt2")
    assert code == 2
    assert "--tokenizer gpt2 is not a folder here" in err and "never downloaded" in err


def test_tokenizer_folder_without_tokenizer_json(folders: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = audit(str(folders["bare"]), "--calib", str(folders["calib"]), "--tokenizer", str(tmp_path))
    assert code == 2
    assert f"--tokenizer {tmp_path} has no tokenizer.json" in err and "save_pretrained" in err


def test_sentencepiece_only_folder_names_the_conversion(folders: dict[str, Path], tmp_path: Path) -> None:
    sp = tmp_path / "sp"
    shutil.copytree(folders["bare"], sp)
    (sp / "tokenizer.model").write_bytes(b"\x0a\x00")  # never parsed: its presence decides the message
    code, _, err = audit(str(sp), "--calib", str(folders["calib"]))
    assert code == 2
    assert "only a SentencePiece tokenizer.model" in err
    assert f"AutoTokenizer.from_pretrained('{sp}').save_pretrained('{sp}')" in err
    assert "--tokenizer DIR" in err
