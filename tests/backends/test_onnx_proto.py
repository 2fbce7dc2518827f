"""The ONNX audit path without ``import onnx``: same reports, same protos, and onnx still importable after.

``actaudit.backends.onnx.proto`` loads the installed onnx's generated protobuf module and its
compiled extension without running ``onnx/__init__`` (which pulls in ml_dtypes). Each helper
is compared with onnx's own on the same inputs, the audit of every ONNX fixture must give the
same report whether or not onnx was imported first (then the helpers of onnx itself are
loaded alongside), and onnx imported after an audit must work in full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = sorted(p.name for p in (REPO / "fixtures" / "models").glob("*.onnx"))

_AUDIT = """
import json, sys
{pre}
import actaudit
out = {{}}
for name in sys.argv[1:]:
    rep = actaudit.audit("fixtures/models/" + name, samples=64, seed=0)
    out[name] = json.loads(rep.to_json(include_run=False))
print(json.dumps({{"reports": out, "onnx": "onnx" in sys.modules, "ml_dtypes": "ml_dtypes" in sys.modules}}))
"""


# The audit with onnx's own helpers in place of the fast path's (the modules look them up at call time).
_ONNX_HELPERS = """
import onnx
from onnx import helper as h, numpy_helper as nh, shape_inference as si
from actaudit.backends.onnx import proto
proto.make_node, proto.make_tensor, proto.make_tensor_value_info = h.make_node, h.make_tensor, h.make_tensor_value_info
proto.to_array, proto.from_array = nh.to_array, nh.from_array
proto.tensor_dtype_to_np_dtype, proto.get_attribute_value = h.tensor_dtype_to_np_dtype, h.get_attribute_value
proto.infer_shapes = si.infer_shapes
proto.all_tensors = __import__("onnx.external_data_helper").external_data_helper._get_all_tensors
proto.load_bytes = onnx.load_model_from_string
"""


def _run(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_audit_without_onnx_gives_the_reports_of_an_audit_with_it() -> None:
    fast = _run(_AUDIT.format(pre=""), *FIXTURES)
    full = _run(_AUDIT.format(pre=_ONNX_HELPERS), *FIXTURES)
    assert fast["onnx"] is False and fast["ml_dtypes"] is False
    assert full["onnx"] is True
    assert set(fast["reports"]) == set(FIXTURES)
    for name in FIXTURES:
        assert fast["reports"][name] == full["reports"][name], name
        assert fast["reports"][name]["sites"], name


_AFTER = """
import sys
import actaudit
actaudit.audit("fixtures/models/cnn_dead.onnx", samples=32, seed=0)
assert "onnx" not in sys.modules
import importlib.util
assert importlib.util.find_spec("onnx") is not None and "onnx" not in sys.modules
import onnx
from onnx import checker, helper, shape_inference, version_converter
from actaudit.backends.onnx import proto
assert onnx.ModelProto is proto.ModelProto and onnx.TensorProto is proto.TensorProto
assert onnx.onnx_cpp2py_export is sys.modules["onnx.onnx_cpp2py_export"]
m = onnx.load("fixtures/models/cnn_dead.onnx")
checker.check_model(m)
assert len(shape_inference.infer_shapes(m).graph.value_info) > 0
assert version_converter.convert_version(m, 17).opset_import[0].version == 17
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
checker.check_model(helper.make_model(g))
print("{}")
"""


def test_onnx_imported_after_an_audit_works_in_full() -> None:
    _run(_AFTER)


# -- each helper against onnx's own ---------------------------------------------------------
onnx = pytest.importorskip("onnx")
from onnx import external_data_helper, helper, numpy_helper, shape_inference  # noqa: E402

from actaudit.backends.onnx import proto  # noqa: E402

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.int64,
    np.bool_,
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_as_onnx_reads_them(dtype: type) -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((2, 3, 4)) * 50).astype(dtype)
    mine = proto.from_array(a, "w")
    np.testing.assert_array_equal(numpy_helper.to_array(mine), a)
    theirs = numpy_helper.from_array(a, "w")
    np.testing.assert_array_equal(proto.to_array(theirs), a)
    assert proto.to_array(theirs).dtype == a.dtype
    # typed fields (no raw_data), as hand-written models carry them
    typed = helper.make_tensor("t", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape, a.flatten().tolist())
    np.testing.assert_array_equal(proto.to_array(typed), numpy_helper.to_array(typed))


def test_a_tensor_whose_dims_disagree_with_its_data_is_refused() -> None:
    t = proto.from_array(np.zeros(6, np.float32), "w")
    del t.dims[:]
    t.dims.extend([1000, 1000])
    with pytest.raises(ValueError):
        proto.to_array(t)


def test_dtypes_and_attributes_match_onnx() -> None:
    for code in [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15]:
        assert proto.tensor_dtype_to_np_dtype(code) == helper.tensor_dtype_to_np_dtype(code)
    attrs = {
        "alpha": 0.25,
        "axis": -1,
        "axes": [0, 2],
        "scales": [1.5, 2.0],
        "mode": "linear",
        "value": numpy_helper.from_array(np.arange(3, dtype=np.float32), "v"),
    }
    mine = proto.make_node("Op", ["a", "b"], ["c"], name="n", **attrs)
    theirs = helper.make_node("Op", ["a", "b"], ["c"], name="n", **attrs)
    assert mine.SerializeToString() == theirs.SerializeToString()
    for a in theirs.attribute:
        got, want = proto.get_attribute_value(a), helper.get_attribute_value(a)
        assert got == want or (
            isinstance(want, onnx.TensorProto) and got.SerializeToString() == want.SerializeToString()
        )
    for shape in [None, [], [None, 3], ["batch", 4]]:
        a = proto.make_tensor_value_info("v", onnx.TensorProto.FLOAT, shape)
        b = helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, shape)
        assert a == b, shape
    e1 = proto.make_tensor("z", onnx.TensorProto.FLOAT, [0, 2], [])
    e2 = helper.make_tensor("z", onnx.TensorProto.FLOAT, [0, 2], [])
    assert numpy_helper.to_array(e1).shape == numpy_helper.to_array(e2).shape == (0, 2)


@pytest.mark.parametrize("name", ["cnn_dead.onnx", "transformer_ffn_dynamo.onnx", "stacked.onnx"])
def test_models_tensors_and_shapes_match_onnx(name: str) -> None:
    path = REPO / "fixtures" / "models" / name
    mine = proto.load_bytes(path.read_bytes())
    theirs = onnx.load(str(path))
    assert mine == theirs
    assert [t.name for t in proto.all_tensors(mine)] == [
        t.name for t in external_data_helper._get_all_tensors(theirs)
    ]
    a = proto.infer_shapes(mine, strict_mode=False, data_prop=True)
    b = shape_inference.infer_shapes(theirs, strict_mode=False, data_prop=True)
    assert a == b
    assert len(a.graph.value_info) > 0


def _external_model(tmp_path: Path) -> tuple[Path, np.ndarray]:
    w = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Relu", ["z"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    return path, w


def test_external_data_is_read_as_onnx_reads_it(tmp_path: Path) -> None:
    path, w = _external_model(tmp_path)
    mine = proto.load_bytes(path.read_bytes())
    (t,) = [t for t in proto.all_tensors(mine) if t.name == "w"]
    assert t.data_location == proto.TensorProto.EXTERNAL
    proto.load_external(t, str(tmp_path))
    np.testing.assert_array_equal(proto.to_array(t), w)
    assert mine == onnx.load(str(path))  # onnx.load reads external data too


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("location", "../ext.data"),
        ("location", "/etc/hostname"),
        ("length", "1099511627776"),
        ("offset", "-4"),
    ],
)
def test_external_data_outside_its_folder_or_its_file_is_refused(
    tmp_path: Path, key: str, value: str
) -> None:
    path, _ = _external_model(tmp_path)
    m = proto.load_bytes(path.read_bytes())
    (t,) = [t for t in proto.all_tensors(m) if t.name == "w"]
    for e in t.external_data:
        if e.key == key:
            e.value = value
            break
    else:
        t.external_data.add(key=key, value=value)
    with pytest.raises(Exception, match=r"outside|absolute|beyond|non-negative"):
        proto.read_external(t, str(tmp_path))
