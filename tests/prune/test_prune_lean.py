"""Pruning a model whose weights are external data from the files: the same pruned weights, hostile data refused.

The weights of such a model are never held whole: planning maps them, each edited weight
is written to a private data file in blocks of rows, and onnxruntime runs the edited
model from that file. On the small fixture every tensor is kept external
(``INLINE_EXTERNAL = 0``) and blocks are a few rows, so that path runs as it does over
2 GB; the written weights must equal, byte for byte, those of the same model pruned from
an inline file (the in-memory path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import prune_models as pm
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from actaudit.backends.onnx import load, prune_edit
from actaudit.cli import cli
from actaudit.edit.cuts import Edits
from actaudit.edit.graph import Param


def _prune(model: Path, x: Path, out: Path) -> dict:
    r = CliRunner().invoke(cli, ["prune", str(model), "--calib", str(x), "-o", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _weights(path: Path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))  # external data beside it read in
    out = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _external_model(tmp_path: Path) -> tuple[Path, Path, Path]:
    pm.build_onnx(tmp_path / "inline.onnx")
    src = tmp_path / "ext" / "ext.onnx"
    src.parent.mkdir()
    m = onnx.load(str(tmp_path / "inline.onnx"))
    onnx.save_model(m, str(src), save_as_external_data=True, location="ext.data", size_threshold=0)
    np.save(tmp_path / "x.npy", pm.calib())
    return tmp_path / "inline.onnx", src, tmp_path / "x.npy"


@pytest.mark.parametrize("over_2gb", [False, True])
def test_lean_prune_writes_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over_2gb: bool
) -> None:
    inline, src, x = _external_model(tmp_path)
    want = _prune(inline, x, tmp_path / "a.onnx")

    blocks: list[str] = []
    real = prune_edit.edited_blocks

    def counted(edits: Edits, key: str):  # type: ignore[no-untyped-def]
        blocks.append(key)
        return real(edits, key)

    monkeypatch.setattr(load, "INLINE_EXTERNAL", 64)  # every weight stays in the data file (scalars read in)
    monkeypatch.setattr(prune_edit, "BLOCK", 40)  # a few rows per block
    monkeypatch.setattr(prune_edit, "SMALL", 0)  # even the biases written as external data
    monkeypatch.setattr(prune_edit, "edited_blocks", counted)
    if over_2gb:  # written as a model over protobuf's limit is: the weights in a data file beside it
        monkeypatch.setattr(load, "_PROTOBUF_LIMIT", 1000)
    got = _prune(src, x, tmp_path / "b.onnx")

    cut = lambda rep: [(s["name"], s["removed_units"], s["folded_units"]) for s in rep["sites"]]  # noqa: E731
    assert cut(got) == cut(want)
    assert got["summary"]["parameters_after"] == want["summary"]["parameters_after"]
    assert {"c1.w", "c2.w", "g1.w"} <= set(blocks)  # the edited weights went through the block writer
    a, b = _weights(tmp_path / "a.onnx"), _weights(tmp_path / "b.onnx")
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        assert b[name].dtype == value.dtype and b[name].tobytes() == value.tobytes(), name
    for name, shape in pm.PRUNED.items():  # the cut by hand
        assert b[name].shape == shape, name
    data = tmp_path / "b.onnx.data"
    assert data.is_file() == over_2gb
    if over_2gb:
        assert got["output"]["external_data"]["path"] == str(data)
    assert (src.parent / "ext.data").stat().st_size > 0  # the input's data file is left as it was


def test_edited_blocks_equal_the_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of rows, cut on every axis, concatenate to exactly what ``Edits.apply`` gives (a memory map)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((37, 11, 3)).astype(np.float32)
    a.tofile(tmp_path / "w.bin")
    mapped = np.memmap(tmp_path / "w.bin", dtype="<f4", mode="r", shape=a.shape)
    monkeypatch.setattr(prune_edit, "BLOCK", 5 * 11 * 3 * 4)  # 5 rows
    for delete in ({0: {0, 5, 6, 36}}, {1: {2, 10}}, {0: {3, 4}, 1: {0}, 2: {1}}, {0: set(range(37))}):
        e = Edits(params={"w": Param("w", mapped)})
        for axis, idx in delete.items():
            e.cut(e.params["w"], axis, sorted(idx))
        want = e.apply("w")
        shape, blocks = prune_edit.edited_blocks(e, "w")
        got = [np.asarray(b) for b in blocks]
        assert shape == want.shape
        assert len(got) == -(-want.shape[0] // 5) if want.shape[0] else got == []
        joined = np.concatenate(got) if got else np.zeros((0, *want.shape[1:]), np.float32)
        assert joined.tobytes() == want.tobytes()


def _hostile(tmp_path: Path, **info: str) -> Path:
    """The fixture with its weights external, one reference rewritten as given."""
    _, src, _ = _external_model(tmp_path)
    m = onnx.load(str(src), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.name == "c1.w")
    entries = {e.key: e.value for e in t.external_data} | info
    del t.external_data[:]
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    bad = src.parent / "bad.onnx"
    bad.write_bytes(m.SerializeToString())
    return bad


@pytest.mark.parametrize(
    "info",
    [
        {"offset": str(10**9)},  # past the end of the data file
        {"length": str(10**9)},  # longer than the file
        {"offset": "-4"},
        {"location": "../outside.data"},  # a location out of the model's folder
        {"location": "/etc/hostname"},
    ],
)
def test_hostile_external_references_are_refused(tmp_path: Path, info: dict[str, str]) -> None:
    (tmp_path / "outside.data").write_bytes(b"\0" * 4096)
    bad = _hostile(tmp_path, **info)
    out = tmp_path / "out.onnx"
    r = CliRunner().invoke(cli, ["prune", str(bad), "--calib", str(tmp_path / "x.npy"), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.startswith("actaudit: error:"), r.output
    assert not out.exists()


def test_model_out_holds_the_pruned_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API's ``model_out`` is whole (its private folder is gone once the prune returns)."""
    import gc
    import tempfile

    from actaudit.prune import prune

    inline, src, x = _external_model(tmp_path)
    want = prune(str(inline), str(x), output=str(tmp_path / "a.onnx")).model_out
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(load, "INLINE_EXTERNAL", 64)
    got = prune(str(src), str(x)).model_out  # nothing written: the edited model read in
    gc.collect()
    assert not [p for p in scratch.iterdir() if p.name.startswith("actaudit-prune-")]
    assert isinstance(want, onnx.ModelProto) and isinstance(got, onnx.ModelProto)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in got.graph.initializer)
    a = {t.name: numpy_helper.to_array(t) for t in want.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        assert b[name].tobytes() == value.tobytes(), name


def test_weight_behind_identity_is_written_to_the_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight read through Identity (exporters share weights so) is edited under the Identity's name."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    w1 = (np.abs(rng.standard_normal((6, 5))) * 0.3 + 0.01).astype(np.float32)  # live units fire
    b1 = np.zeros(6, np.float32)
    b1[[1, 4]] = -100.0  # units 1 and 4 dead for any input in [0, 1]
    w2 = (rng.standard_normal((3, 6)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["w1"], ["w1_shared"], name="share"),
            helper.make_node("Gemm", ["x", "w1_shared", "b1"], ["z"], name="fc1", transB=1),
            helper.make_node("Relu", ["z"], ["a"], name="act"),
            helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2", transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in {"w1": w1, "b1": b1, "w2": w2}.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(m, str(tmp_path / "inline.onnx"))
    (tmp_path / "ext").mkdir()
    onnx.save_model(
        m, str(tmp_path / "ext" / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0
    )
    np.save(tmp_path / "x.npy", rng.uniform(0, 1, (32, 5)).astype(np.float32))
    want = _prune(tmp_path / "inline.onnx", tmp_path / "x.npy", tmp_path / "a.onnx")
    monkeypatch.setattr(load, "INLINE_EXTERNAL", 0)
    monkeypatch.setattr(prune_edit, "SMALL", 0)
    got = _prune(tmp_path / "ext" / "m.onnx", tmp_path / "x.npy", tmp_path / "b.onnx")
    assert (
        [s["removed_units"] for s in got["sites"]] == [[1, 4]] == [s["removed_units"] for s in want["sites"]]
    )
    a, b = _weights(tmp_path / "a.onnx"), _weights(tmp_path / "b.onnx")
    assert sorted(a) == sorted(b) == ["b1", "w1_shared", "w2"]
    assert b["w1_shared"].tobytes() == np.delete(w1, [1, 4], axis=0).tobytes() == a["w1_shared"].tobytes()
    assert b["w2"].tobytes() == np.delete(w2, [1, 4], axis=1).tobytes() == a["w2"].tobytes()


def test_references_are_checked_again_when_copied(tmp_path: Path) -> None:
    """The data file is read again after load (planning maps it, the writer copies it): a location
    linked out of the folder maps to nothing, and a reference past the end of its file is exit 2."""
    from actaudit.errors import InputError

    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.data").write_bytes(b"\1" * 64)
    (folder / "link.data").symlink_to(tmp_path / "secret.data")
    (folder / "w.data").write_bytes(b"\0" * 64)

    def tensor(**info: str) -> onnx.TensorProto:
        t = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[4, 4])
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in info.items():
            t.external_data.add(key=k, value=v)
        return t

    assert prune_edit._mapped(tensor(location="link.data", offset="0", length="64"), folder) is None
    assert prune_edit._mapped(tensor(location="w.data", offset="0", length="64"), folder) is not None
    out = tmp_path / "out"
    out.mkdir()
    for bad in (
        {"location": "w.data", "offset": "32", "length": "64"},
        {"location": "link.data", "offset": "0", "length": "64"},
        {"location": "../secret.data", "offset": "0", "length": "64"},
    ):
        m = onnx.ModelProto()
        m.graph.initializer.append(tensor(**bad))
        data = prune_edit._Data(out / prune_edit.DATA, folder)
        try:
            with pytest.raises(InputError):
                data.copy_rest(m)
        finally:
            data.close()
