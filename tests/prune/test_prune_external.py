"""A model whose weights live in external data prunes from memory-mapped weights to the same cut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import prune_models as pm
from click.testing import CliRunner

from actaudit.cli import cli


def _prune(model: Path, x: Path, out: Path) -> dict:
    r = CliRunner().invoke(cli, ["prune", str(model), "--calib", str(x), "-o", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_external_data_prunes_alike(tmp_path: Path) -> None:
    pm.build_onnx(tmp_path / "inline.onnx")
    m = onnx.load(str(tmp_path / "inline.onnx"))
    onnx.save_model(
        m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0
    )
    np.save(tmp_path / "x.npy", pm.calib())
    a = _prune(tmp_path / "inline.onnx", tmp_path / "x.npy", tmp_path / "a.onnx")
    b = _prune(tmp_path / "ext.onnx", tmp_path / "x.npy", tmp_path / "b.onnx")
    cut = lambda rep: [(s["name"], s["removed_units"], s["folded_units"]) for s in rep["sites"]]  # noqa: E731
    assert cut(a) == cut(b)
    assert a["summary"]["parameters_after"] == b["summary"]["parameters_after"]
    assert a["summary"]["macs_after"] == b["summary"]["macs_after"]
    assert b["summary"]["drift_verified"]["relative_l2"] <= 1e-5
    assert (tmp_path / "ext.data").stat().st_size > 0  # the input's data file is left as it was


def test_mapped_refuses_hostile_references(tmp_path: Path) -> None:
    """Offsets, lengths and locations from the file are checked before a map is sized."""
    from actaudit.backends.onnx.prune import _mapped

    (tmp_path / "w.data").write_bytes(b"\0" * 64)
    (tmp_path.parent / "outside.data").write_bytes(b"\0" * 64)

    def tensor(**info: str) -> onnx.TensorProto:
        t = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[4, 4])
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in info.items():
            t.external_data.add(key=k, value=v)
        return t

    ok = _mapped(tensor(location="w.data", offset="0", length="64"), tmp_path)
    assert ok is not None and ok.shape == (4, 4) and not ok.flags.writeable
    for bad in (
        {"location": "w.data", "offset": "16", "length": "64"},  # past the end of the file
        {"location": "w.data", "offset": "0", "length": "32"},  # length does not match the dims
        {"location": "w.data", "offset": "-8"},
        {"location": "../outside.data"},
        {"location": str(tmp_path / "w.data")},
        {"location": "missing.data"},
    ):
        assert _mapped(tensor(**bad), tmp_path) is None, bad
