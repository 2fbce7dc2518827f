"""Tool vs independent oracle on package-shipped trained models (issue 12's closing table).

Run ``.venv/bin/python bench/oracle_realmodels.py`` from the repository root after ``make install``.
ONNX oracle: the pre-activations promoted to graph outputs (Ifs replaced by the branch they take)
and counted in numpy, on the unit axis of a Conv that consumes the activation (→ 1), else of the
nearest producer found by walking the graph here (Conv → 1, MatMul/Gemm → last, LSTM/GRU → the
axis of ``hidden_size``, through If branches). Rows: ``--only int8`` or ``--only exporters``. PyTorch oracle: resemblyzer's
speaker encoder written out in float64 numpy (``tests/test_realmodels_truth.py``). Each cell
of the printed markdown rows is ``tool / oracle``.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import actaudit
from actaudit.backends.onnx import backend
from actaudit.backends.onnx.sites import find_sites
from actaudit.data import DataSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RNG = np.random.default_rng(11)
LOW = {"relu": 0.0, "gelu": -3.02, "silu": -6.14, "hardswish": -3.0, "sigmoid": -5.987, "tanh": -2.993}


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, f"{name} is not installed (make install)"
    return Path(spec.origin).parent


def _walk(g: onnx.GraphProto) -> Any:
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk(a.g)


def _origin(model: onnx.ModelProto, x: str) -> Any:
    prod = {o: n for n in _walk(model.graph) for o in n.output}
    frontier, seen = [x], set()
    while frontier:
        t = frontier.pop(0)
        n = prod.get(t)
        if n is None or t in seen:
            continue
        seen.add(t)
        if n.op_type == "If":
            k = list(n.output).index(t)
            frontier += [a.g.output[k].name for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
        elif n.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
            return "conv"
        elif n.op_type.endswith(("LSTM", "GRU")):  # DynamicQuantizeLSTM too
            return next(a.i for a in n.attribute if a.name == "hidden_size")
        elif n.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"):
            return "linear"
        else:
            frontier += [i for i in n.input if i]
    return None


def _taken_branches(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with every If that runs on ``feed`` replaced by the nodes of the branch it takes, so
    that tensors inside branches can be graph outputs (the oracle reads them there)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for _ in range(4):  # nested Ifs surface one level per round
        ifs = [n for n in m.graph.node if n.op_type == "If"]
        if not ifs:
            break
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        del probe.graph.output[:]
        conds = [n.input[0] for n in ifs]
        probe.graph.output.extend(onnx.ValueInfoProto(name=c) for c in dict.fromkeys(conds))
        taken = dict(
            zip(
                dict.fromkeys(conds),
                ort.InferenceSession(probe.SerializeToString()).run(None, feed),
                strict=True,
            )
        )
        nodes: list[onnx.NodeProto] = []
        for n in m.graph.node:
            if n.op_type != "If":
                nodes.append(n)
                continue
            branch = "then_branch" if bool(np.asarray(taken[n.input[0]]).reshape(-1)[0]) else "else_branch"
            g = next(a.g for a in n.attribute if a.name == branch)
            nodes.extend(g.node)
            m.graph.initializer.extend(g.initializer)
            nodes.extend(
                onnx.helper.make_node("Identity", [o.name], [y])
                for o, y in zip(g.output, n.output, strict=True)
            )
        del m.graph.node[:]
        m.graph.node.extend(nodes)
    return m


def _conv_input(model: onnx.ModelProto, x: str, y: str) -> bool:
    """Does the activation's output ``y`` reach a Conv's data input through Identity/Dropout only?
    Then its units are the Conv's input channels (axis 1), whatever produced ``x``."""
    users: dict[str, list[Any]] = {}
    for n in _walk(model.graph):
        for i in n.input:
            users.setdefault(i, []).append(n)
    frontier = [y]
    for _ in range(4):
        nxt = []
        for t in frontier:
            for n in users.get(t, []):
                if n.op_type in ("Conv", "ConvInteger", "DynamicQuantizeLinear") and n.input[0] == t:
                    if n.op_type != "DynamicQuantizeLinear":
                        return True
                    nxt.append(n.output[0])
                elif n.op_type in ("Identity", "Dropout"):
                    nxt.append(n.output[0])
        frontier = nxt
    return False


def _verdicts(low: np.ndarray, high: np.ndarray, elements: int, kind: str) -> tuple[int, int]:
    dead = int((low >= elements).sum()) if kind in ("relu", "gelu", "silu", "hardswish") else 0
    bounded = kind in ("sigmoid", "tanh", "hardsigmoid")
    return dead, int(((low + high) >= 0.99 * elements).sum()) if bounded else 0


def _oracle(z: np.ndarray, origin: Any, kind: str, params: dict[str, float]) -> tuple[int, int, int]:
    if isinstance(origin, int):
        axis: int | None = next((d for d in range(1, z.ndim) if z.shape[d] == origin), None)
    elif z.ndim <= 1 or origin is None:
        axis = None
    else:
        axis = 1 if origin == "conv" else z.ndim - 1
    flat = z.reshape(-1, 1) if axis is None else np.moveaxis(z, axis, -1).reshape(-1, z.shape[axis])
    lo, hi = LOW.get(kind), -LOW[kind] if kind in ("sigmoid", "tanh") else None
    if kind == "hardsigmoid":
        a, b = params.get("alpha", 1 / 6), params.get("beta", 0.5)
        lo, hi = -b / a, (1 - b) / a
    low = (flat <= lo).sum(0) if lo is not None else np.zeros(flat.shape[1])
    high = (flat >= hi).sum(0) if hi is not None else np.zeros(flat.shape[1])
    return (flat.shape[1], *_verdicts(low, high, flat.shape[0], kind))


def onnx_row(label: str, path: Path, feed: dict[str, np.ndarray]) -> None:
    h = backend.load(path)
    cap = backend.capture(
        h, DataSource(lambda: iter([([], feed)]), "t"), samples=None, stuck_fraction=0.01, axis_overrides=[]
    )
    sites = {s.name: s for s in find_sites(h.model.graph).sites}
    m = _taken_branches(h.model, feed)
    del m.graph.output[:]
    names = [sites[r.info.name].x for r in cap.sites if r.stats.samples]
    for n in names:
        m.graph.output.append(onnx.ValueInfoProto(name=n))
    got = dict(zip(names, ort.InferenceSession(m.SerializeToString()).run(names, feed), strict=True))
    tool, orc = [0, 0, 0, 0], [0, 0, 0, 0]
    for r in (r for r in cap.sites if r.stats.samples):
        x = sites[r.info.name].x
        origin = "conv" if _conv_input(m, x, sites[r.info.name].y) else _origin(h.model, x)
        o = _oracle(got[x], origin, r.info.kind, r.info.params)
        t = (r.info.units, *_verdicts(r.stats.low, r.stats.high, max(r.stats.elements, 1), r.info.kind))
        tool = [tool[0] + 1, *(a + b for a, b in zip(tool[1:], t, strict=True))]
        orc = [orc[0] + 1, *(a + b for a, b in zip(orc[1:], o, strict=True))]
    cells = " | ".join(f"{a} / {b}" for a, b in zip(tool, orc, strict=True))
    ops = ", ".join(sorted({u.op for u in cap.uncovered}))
    print(f"| {label} | {cells} | {len(cap.uncovered)} {ops} |")


def _int8(path: Path, ops: list[str] | None = None) -> Path:
    """A dynamically quantized int8 copy of ``path`` (onnxruntime.quantization, weights QInt8);
    ``ops``: only these op types (the PP-OCRv4 recogniser's Conv weights are not initializers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(tempfile.mkdtemp()) / (path.stem + ".int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    return out


def exporter_rows() -> None:
    """Shipped exports by other exporters: spox (silero_vad.onnx and its OpenVINO variant), the
    PyTorch exporter of torch 2.9 / 2.11 (an If-less opset-18 graph, an LSTM over a sequence)."""
    sv = _pkg("silero_vad") / "data"
    audio = (RNG.standard_normal((16, 512)) * 0.1).astype(np.float32)
    sr = np.array(16000, np.int64)
    state = np.zeros((2, 16, 128), np.float32)
    onnx_row("silero_vad.onnx (spox)", sv / "silero_vad.onnx", {"input": audio, "state": state, "sr": sr})
    onnx_row(
        "silero_vad_openvino_16k.onnx (spox, batch 1)",
        sv / "silero_vad_openvino_16k.onnx",
        {
            "input": (RNG.standard_normal((1, 576)) * 0.1).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
        },
    )
    onnx_row(
        "silero_vad_op18_ifless.onnx (torch 2.9)",
        sv / "silero_vad_op18_ifless.onnx",
        {"input": audio, "sr": sr, "state": state},
    )
    h = np.zeros((1, 1, 128), np.float32)
    onnx_row(
        "silero_vad_16k_sequence.onnx (torch 2.11)",
        sv / "silero_vad_16k_sequence.onnx",
        {"input": (RNG.standard_normal((16, 576)) * 0.1).astype(np.float32), "h": h, "c": h},
    )


def int8_rows() -> None:
    """Dynamically quantized int8 exports (DynamicQuantizeLinear, MatMulInteger, ConvInteger,
    com.microsoft DynamicQuantizeLSTM) made from the shipped fp32 models."""
    sv = _pkg("silero_vad") / "data"
    audio = (RNG.standard_normal((16, 512)) * 0.1).astype(np.float32)
    state = np.zeros((2, 16, 128), np.float32)
    onnx_row(
        "silero_vad_16k_op15 (int8 dynamic)",
        _int8(sv / "silero_vad_16k_op15.onnx"),
        {"input": audio, "state": state, "sr": np.array(16000, np.int64)},
    )
    h = np.zeros((1, 1, 128), np.float32)
    onnx_row(
        "silero_vad_16k_sequence (int8 dynamic: DynamicQuantizeLSTM)",
        _int8(sv / "silero_vad_16k_sequence.onnx"),
        {"input": (RNG.standard_normal((16, 576)) * 0.1).astype(np.float32), "h": h, "c": h},
    )
    ocr = _pkg("rapidocr_onnxruntime") / "models"
    onnx_row(
        "rapidocr cls (int8 dynamic)",
        _int8(ocr / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        {"x": RNG.random((8, 3, 48, 192)).astype(np.float32)},
    )
    onnx_row(
        "rapidocr rec PP-OCRv4 (int8 dynamic, MatMul only)",
        _int8(ocr / "ch_PP-OCRv4_rec_infer.onnx", ["MatMul"]),
        {"x": RNG.random((2, 3, 48, 160)).astype(np.float32)},
    )
    mg = _pkg("magika") / "models" / "standard_v3_3" / "model.onnx"
    onnx_row(
        "magika standard_v3_3 (int8 dynamic)",
        _int8(mg),
        {"bytes": RNG.integers(0, 257, (24, 2048)).astype(np.int32)},
    )


def speaker_rows() -> None:
    from realmodel_archs import VoiceEncoder
    from test_realmodels_truth import _speaker_oracle

    ck = _pkg("resemblyzer") / "pretrained.pt"
    sd_t = torch.load(ck, map_location="cpu", weights_only=True)["model_state"]
    want = _speaker_oracle({k: v.double().numpy() for k, v in sd_t.items()}, MELS)
    m = VoiceEncoder().eval()
    m.load_state_dict({k: v for k, v in sd_t.items() if not k.startswith("similarity")})
    tmp = Path(tempfile.mkdtemp())
    torch.jit.save(torch.jit.script(m), str(tmp / "ve.ts"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(m, (torch.from_numpy(MELS[:8]),)), str(tmp / "ve.pt2"))
    orc = (
        len(want),
        *(
            sum(f(v) for v in want.values())
            for f in (lambda v: v[0], lambda v: len(v[1]), lambda v: len(v[2]))
        ),
    )
    for fmt, model in (
        ("eager", m),
        ("TorchScript", str(tmp / "ve.ts")),
        ("torch.export", str(tmp / "ve.pt2")),
    ):
        d = actaudit.audit(model, MELS, batch_size=8).to_dict()
        got = {s["name"]: (s["units"], set(s["dead_units"]), set(s["saturated_units"])) for s in d["sites"]}
        tool = (len(got), *(sum(s[k] for s in d["sites"]) for k in ("units", "dead", "saturated")))
        cells = " | ".join(f"{a} / {b}" for a, b in zip(tool, orc, strict=True))
        print(
            f"| resemblyzer speaker encoder ({fmt}) | {cells} | {len(d['uncovered'])} | per-site equal: {got == want}"
        )


MELS = np.random.default_rng(0).random((16, 30, 40)).astype(np.float32) * 0.3

if __name__ == "__main__" and len(sys.argv) > 1:  # --only ROWS: int8, exporters
    print("| model | sites | units | dead | saturated | uncovered |")
    print("| --- | --- | --- | --- | --- | --- |")
    {"int8": int8_rows, "exporters": exporter_rows}[sys.argv[-1]]()
elif __name__ == "__main__":
    print("| model | sites | units | dead | saturated | uncovered |")
    print("| --- | --- | --- | --- | --- | --- |")
    sv = _pkg("silero_vad") / "data"
    audio = (RNG.standard_normal((16, 512)) * 0.1).astype(np.float32)
    state = np.zeros((2, 16, 128), np.float32)
    onnx_row(
        "silero_vad_16k_op15.onnx",
        sv / "silero_vad_16k_op15.onnx",
        {"input": audio, "state": state, "sr": np.array(16000, np.int64)},
    )
    onnx_row("silero_vad_half.onnx", sv / "silero_vad_half.onnx", {"input": audio, "state": state})
    ocr = _pkg("rapidocr_onnxruntime") / "models"
    onnx_row(
        "rapidocr cls",
        ocr / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        {"x": RNG.random((8, 3, 48, 192)).astype(np.float32)},
    )
    onnx_row(
        "rapidocr det (PP-OCRv4)",
        ocr / "ch_PP-OCRv4_det_infer.onnx",
        {"x": RNG.random((2, 3, 64, 64)).astype(np.float32)},
    )
    onnx_row(
        "rapidocr rec (PP-OCRv4)",
        ocr / "ch_PP-OCRv4_rec_infer.onnx",
        {"x": RNG.random((2, 3, 48, 160)).astype(np.float32)},
    )
    mg = _pkg("magika") / "models" / "standard_v3_3" / "model.onnx"
    onnx_row("magika standard_v3_3", mg, {"bytes": RNG.integers(0, 257, (24, 2048)).astype(np.int32)})
    speaker_rows()
    exporter_rows()
    int8_rows()
