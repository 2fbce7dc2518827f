"""Unit axes through shape ops, [batch] and scalar sites, recurrent gates, Swish-β (issue 12).

Every expected value is computed here in numpy from the models' own weights (or built
into the model by construction), sharing no code with the capture.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import actaudit
from actaudit import unitaxis as ua

SIG_STUCK = 5.987  # |x| beyond which sigmoid' < 1 % of its maximum (docs/statistics.md)


def _sites(report: actaudit.Report) -> dict[str, dict]:
    return {s["name"]: s for s in report.to_dict()["sites"]}


def _to_onnx(m: nn.Module, x: np.ndarray, path: object) -> None:
    """The TorchScript-based exporter (its graphs carry no module names: the axis comes from shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.from_numpy(x[:2]),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )


# -- the backend-neutral rule -----------------------------------------------------------------
def test_rule_follows_shape_ops() -> None:
    conv = ua.produced(ua.CONV, 4)
    assert conv == ua.Tag(1, ua.CONV)
    # [N, C, H, W] -> [N, C, H*W]: the channel axis maps; -> [N, 3, C/3, H, W] it does not.
    assert ua.reshape(conv, (None, 12, 4, 5), (None, 12, 20)) == ua.Tag(1, ua.CONV)
    assert ua.reshape(conv, (None, 12, 4, 5), (None, 3, 4, 4, 5)) is None
    assert ua.reshape(conv, (None, 12, 1), (None, 12)) == ua.Tag(1, ua.CONV)  # Conv -> Squeeze
    assert ua.permute(ua.Tag(1, ua.CONV), [0, 2, 3, 1]) == ua.Tag(3, ua.CONV)
    assert ua.remove_axes(ua.Tag(2, ua.LINEAR), [1], 3) == ua.Tag(1, ua.LINEAR)
    assert ua.remove_axes(ua.Tag(1, ua.CONV), [1], 3) is None
    assert ua.insert_axes(ua.Tag(1, ua.LINEAR), [-1], 3) == ua.Tag(1, ua.LINEAR)
    assert ua.gather(ua.Tag(2, ua.LINEAR), 1, 0, 3) == ua.Tag(1, ua.LINEAR)
    assert ua.elementwise(ua.Tag(1, ua.LINEAR), 2, 3) == ua.Tag(2, ua.LINEAR)
    assert ua.spatial(ua.Tag(2, ua.LINEAR), 3) is None
    # The batch axis is never a unit axis.
    assert ua.resolve(None, 1) == (None, ua.WHOLE)
    assert ua.resolve(ua.Tag(1, ua.LINEAR), 2) == (1, ua.PRODUCER)
    assert ua.resolve(None, 3) == (2, ua.GUESSED)


# -- a YOLO-style detection head: Conv -> Reshape -> Concat -> Split -> Sigmoid ----------------
NC = 6  # class channels; 4 box channels before them


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.p1 = nn.Conv2d(8, 4 + NC, 1)
        self.p2 = nn.Conv2d(8, 4 + NC, 1, stride=2)
        with torch.no_grad():
            for p in (self.p1, self.p2):
                p.weight.mul_(0.1)
                p.bias.zero_()
                p.bias[4 + 0] = 20.0  # class 0 saturated high at every anchor
                p.bias[4 + 3] = -20.0  # class 3 saturated low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.stem(x))
        n = x.shape[0]
        a = self.p1(f).reshape(n, 4 + NC, -1)
        b = self.p2(f).reshape(n, 4 + NC, -1)
        y = torch.cat([a, b], 2)
        box, cls = y.split([4, NC], 1)
        return torch.cat([box, torch.sigmoid(cls)], 1)


def _head_oracle(m: Head, x: np.ndarray) -> set[int]:
    with torch.no_grad():
        f = F.relu(m.stem(torch.from_numpy(x)))
        zs = [m.p1(f).numpy(), m.p2(f).numpy()]
    z = np.concatenate([v.reshape(v.shape[0], v.shape[1], -1) for v in zs], 2)[:, 4:]
    stuck = (np.abs(z) >= SIG_STUCK).mean(axis=(0, 2))
    return {int(u) for u in np.flatnonzero(stuck >= 0.99)}


@pytest.fixture(scope="module")
def head() -> tuple[Head, np.ndarray]:
    rng = np.random.default_rng(1)
    return Head().eval(), rng.standard_normal((8, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["eager", "onnx"])
def test_detection_head_units_are_class_channels(head, tmp_path, fmt) -> None:
    m, x = head
    model: object = m
    if fmt == "onnx":
        path = tmp_path / "head.onnx"
        _to_onnx(m, x, path)
        model = str(path)
    sites = _sites(actaudit.audit(model, x, batch_size=4))
    sig = next(s for s in sites.values() if s["kind"] == "sigmoid")
    assert sig["units"] == NC and sig["unit_axis"] == 1 and sig["unit_axis_source"] == "producer"
    assert set(sig["saturated_units"]) == _head_oracle(m, x) == {0, 3}


# -- Conv -> Squeeze -> GELU ------------------------------------------------------------------
class SqueezeGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv1d(4, 10, 7)  # [N, 4, 7] -> [N, 10, 1]
        with torch.no_grad():
            self.conv.bias[[2, 5]] = -50.0  # dead: GELU stuck below -3.02

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x).squeeze(-1))


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "onnx"])
def test_conv_squeeze_gelu_has_channel_units(tmp_path, fmt) -> None:
    m = SqueezeGelu().eval()
    x = np.random.default_rng(3).standard_normal((12, 4, 7)).astype(np.float32)
    model: object = m
    if fmt == "torchscript":
        model = str(tmp_path / "m.ts")
        torch.jit.save(torch.jit.trace(m, torch.from_numpy(x)), model)
    elif fmt == "onnx":
        model = str(tmp_path / "m.onnx")
        _to_onnx(m, x, model)
    with torch.no_grad():
        z = m.conv(torch.from_numpy(x)).numpy()[:, :, 0]
    dead = {int(u) for u in np.flatnonzero((z > -3.02).mean(0) == 0)}
    (site,) = _sites(actaudit.audit(model, x)).values()
    assert site["units"] == 10 and site["unit_axis"] == 1
    assert set(site["dead_units"]) == dead == {2, 5}


# -- a [batch] activation is one unit, whatever the batch size --------------------------------
class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x).squeeze(-1)) + torch.tanh(x.sum())


@pytest.mark.parametrize("batch", [3, 8])
def test_batch_and_scalar_sites_have_one_unit(batch) -> None:
    x = np.random.default_rng(5).standard_normal((16, 5)).astype(np.float32)
    sites = _sites(actaudit.audit(Scalar().eval(), x, batch_size=batch))
    assert {n: (s["units"], s["unit_axis_source"]) for n, s in sites.items()} == {
        "sigmoid": (1, "whole"),
        "tanh": (1, "whole"),
    }
    # The scalar tanh sees one element per batch: 16 samples in batches of `batch`.
    assert sites["tanh"]["coverage"]["elements_per_unit"] == -(-16 // batch)
    assert sites["sigmoid"]["coverage"]["elements_per_unit"] == 16


def test_onnx_rank_known_only_at_run_time_is_audited(tmp_path) -> None:
    """A Sigmoid of a tensor reshaped to a run-time shape that turns out scalar (issue 12: plcmos)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),  # scalar
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Slice", ["shp", "zero", "zero"], ["empty"]),  # [] at run time
        helper.make_node("Reshape", ["s", "empty"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["y"]),
    ]
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    g = helper.make_graph(nodes, "g", [x], [y], [zero])
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    data = np.full((10, 3), 3.0, np.float32)  # every sum is 9 (or 3 x batch): stuck high
    (site,) = _sites(actaudit.audit(str(path), data, batch_size=4)).values()
    assert site["units"] == 1 and site["unit_axis_source"] == "whole"
    assert site["saturated"] == 1 and site["coverage"]["elements_per_unit"] == 3


# -- Swish-β as one SiLU-family site -----------------------------------------------------------
def test_swish_beta_is_one_silu_site(tmp_path) -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.array([0.0, -40.0, 0.0, -40.0], np.float32)  # units 1 and 3 dead
    beta = 1.702
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("Mul", ["h", "beta"], ["bh"]),
        helper.make_node("Sigmoid", ["bh"], ["s"]),
        helper.make_node("Mul", ["h", "s"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(v, n) for v, n in ((w, "w"), (b, "b"), (np.array(beta, np.float32), "beta"))
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    path = tmp_path / "swish.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal((32, 3)).astype(np.float32)
    z = beta * (x @ w.T + b)
    dead = {int(u) for u in np.flatnonzero((z > -6.14).mean(0) == 0)}  # silu stuck below -6.14
    (site,) = _sites(actaudit.audit(str(path), x)).values()
    assert site["kind"] == "silu" and site["params"] == {"beta": 1.702} and site["units"] == 4
    assert set(site["dead_units"]) == dead == {1, 3}


# -- recurrent gates -----------------------------------------------------------------------
H = 6


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.lstm = nn.LSTM(3, H, batch_first=True)
        self.cell = nn.LSTMCell(H, H)
        with torch.no_grad():
            self.lstm.bias_ih_l0[H + 2] = 30.0  # forget gate unit 2: saturated high
            self.cell.bias_ih[2 * H + 4] = -30.0  # cell gate unit 4: saturated low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        h, _ = self.cell(y[:, -1])
        return h


def _np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _lstm_oracle(m: Recurrent, x: np.ndarray) -> dict[str, set[int]]:
    """Gate pre-activations by hand in numpy (float64), with the stuck rule of sigmoid and tanh."""
    p = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    n, steps, _ = x.shape
    h, c = np.zeros((n, H)), np.zeros((n, H))
    pre: dict[str, list[np.ndarray]] = {g: [] for g in ("i", "f", "g", "o", "c")}
    for t in range(steps):
        z = (
            x[:, t] @ p["lstm.weight_ih_l0"].T
            + p["lstm.bias_ih_l0"]
            + h @ p["lstm.weight_hh_l0"].T
            + p["lstm.bias_hh_l0"]
        )
        i, f, g, o = np.split(z, 4, axis=1)
        c = _np_sigmoid(f) * c + _np_sigmoid(i) * np.tanh(g)
        h = _np_sigmoid(o) * np.tanh(c)
        for k, v in zip("ifgoc", (i, f, g, o, c), strict=True):
            pre[k].append(v)
    z = h @ p["cell.weight_ih"].T + p["cell.bias_ih"] + p["cell.bias_hh"]
    ci, cf, cg, co = np.split(z, 4, axis=1)
    cc = _np_sigmoid(cf) * 0 + _np_sigmoid(ci) * np.tanh(cg)

    def sat(v: np.ndarray, thr: float) -> set[int]:
        v = v.reshape(-1, H)
        return {int(u) for u in np.flatnonzero((np.abs(v) >= thr).mean(0) >= 0.99)}

    tanh_thr = 2.993
    return {
        "lstm.l0.input_gate": sat(np.stack(pre["i"]), SIG_STUCK),
        "lstm.l0.forget_gate": sat(np.stack(pre["f"]), SIG_STUCK),
        "lstm.l0.cell_gate": sat(np.stack(pre["g"]), tanh_thr),
        "lstm.l0.output_gate": sat(np.stack(pre["o"]), SIG_STUCK),
        "lstm.l0.cell_tanh": sat(np.stack(pre["c"]), tanh_thr),
        "cell.input_gate": sat(ci, SIG_STUCK),
        "cell.forget_gate": sat(cf, SIG_STUCK),
        "cell.cell_gate": sat(cg, tanh_thr),
        "cell.output_gate": sat(co, SIG_STUCK),
        "cell.cell_tanh": sat(cc, tanh_thr),
    }


def test_lstm_and_lstmcell_gates_are_sites_of_their_own() -> None:
    m = Recurrent().eval()
    x = np.random.default_rng(8).standard_normal((10, 5, 3)).astype(np.float32)
    report = actaudit.audit(m, x, batch_size=4)
    sites = _sites(report)
    want = _lstm_oracle(m, x.astype(np.float64))
    assert {n: set(s["saturated_units"]) for n, s in sites.items()} == want
    assert want["lstm.l0.forget_gate"] == {2} and want["cell.cell_gate"] == {4}
    assert all(s["units"] == H and s["unit_axis_source"] == "producer" for s in sites.values())
    assert sites["lstm.l0.forget_gate"]["coverage"]["elements_per_unit"] == 10 * 5
    assert report.to_dict()["uncovered"] == []


@pytest.mark.parametrize("fmt", ["torchscript", "torch.export"])
def test_compiled_recurrent_gates_match_the_oracle(tmp_path, fmt) -> None:
    """LSTMCell gates run as visible ops and are named by gate; the fused LSTM layer is written out."""
    m = Recurrent().eval()
    x = np.random.default_rng(8).standard_normal((10, 5, 3)).astype(np.float32)
    xt = torch.from_numpy(x[:4])
    if fmt == "torchscript":
        path = tmp_path / "r.ts"
        torch.jit.save(torch.jit.script(m), str(path))
    else:
        path = tmp_path / "r.pt2"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export on nn.LSTM warns about its flat weights
            torch.export.save(torch.export.export(m, (xt,)), str(path))
    d = actaudit.audit(str(path), x, batch_size=4).to_dict()
    want = _lstm_oracle(m, x.astype(np.float64))
    assert {s["name"]: set(s["saturated_units"]) for s in d["sites"]} == want
    assert d["uncovered"] == []


class Gru(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(16)
        self.gru = nn.GRU(3, 4, num_layers=2, bidirectional=True)
        with torch.no_grad():
            self.gru.bias_ih_l1[4 + 1] = 30.0  # update gate, layer 1, unit 1: saturated high
            self.gru.bias_hh_l0_reverse[2 * 4 + 3] = -30.0  # new gate (r * this), reverse layer 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def _gru_oracle(m: Gru, x: np.ndarray, batch: int) -> dict[str, set[int]]:
    """Gate pre-activations of a 2-layer bidirectional GRU in float64 numpy, batch by batch."""
    p = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    pre: dict[str, list[np.ndarray]] = {}
    for b0 in range(0, x.shape[0], batch):
        inp = x[b0 : b0 + batch].astype(np.float64)  # [T, N, F]: samples are time steps here
        for layer in range(2):
            outs = []
            for d, sfx in enumerate(("", "_reverse")):
                w = [p[f"gru.{n}_l{layer}{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                h = np.zeros((inp.shape[1], 4))
                hs = [np.zeros(0)] * inp.shape[0]
                for t in range(inp.shape[0] - 1, -1, -1) if d else range(inp.shape[0]):
                    gi, gh = inp[t] @ w[0].T + w[2], h @ w[1].T + w[3]
                    r, z = gi[:, :4] + gh[:, :4], gi[:, 4:8] + gh[:, 4:8]
                    n = gi[:, 8:] + _np_sigmoid(r) * gh[:, 8:]
                    h = (1 - _np_sigmoid(z)) * np.tanh(n) + _np_sigmoid(z) * h
                    hs[t] = h
                    for gate, v in (("reset_gate", r), ("update_gate", z), ("new_gate", n)):
                        pre.setdefault(f"gru.l{layer}{sfx}.{gate}", []).append(v)
                outs.append(np.stack(hs))
            inp = np.concatenate(outs, -1)
    thr = {"reset_gate": SIG_STUCK, "update_gate": SIG_STUCK, "new_gate": 2.993}
    return {
        k: {
            int(u)
            for u in np.flatnonzero((np.abs(np.concatenate(v)) >= thr[k.rsplit(".", 1)[1]]).mean(0) >= 0.99)
        }
        for k, v in pre.items()
    }


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "torch.export"])
def test_gru_gates_match_the_oracle_in_every_format(tmp_path, fmt) -> None:
    m = Gru().eval()
    x = np.random.default_rng(17).standard_normal((12, 2, 3)).astype(np.float32)
    model: object = m
    if fmt == "torchscript":
        model = str(tmp_path / "g.ts")
        torch.jit.save(torch.jit.script(m), model)
    elif fmt == "torch.export":
        model = str(tmp_path / "g.pt2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nn.GRU's flat weights; the program is fixed to 4 steps
            torch.export.save(torch.export.export(m, (torch.from_numpy(x[:4]),)), model)
    d = actaudit.audit(model, x, batch_size=4).to_dict()
    want = _gru_oracle(m, x, 4)
    assert {s["name"]: set(s["saturated_units"]) for s in d["sites"]} == want
    assert want["gru.l1.update_gate"] == {1} and want["gru.l0_reverse.new_gate"] == {3}
    assert all(s["coverage"]["elements_per_unit"] == 12 * 2 for s in d["sites"])
    assert d["uncovered"] == []


class _Block(nn.Module):
    def __init__(self, dead: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[dead] = -50.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class TwoArms(nn.Module):
    """``if flag: a(x) else: b(x)``: both arms run the same ops; the first in graph order does not run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(10)
        self.a, self.b = _Block(0), _Block(3)

    def forward(self, x: torch.Tensor, flag: bool = False) -> torch.Tensor:
        if flag:
            return self.a(x)
        return self.b(x)


def test_torchscript_untaken_branch_does_not_steal_names(tmp_path) -> None:
    path = tmp_path / "two.ts"
    torch.jit.save(torch.jit.script(TwoArms().eval()), str(path))
    x = np.random.default_rng(11).standard_normal((8, 3, 6, 6)).astype(np.float32)
    sites = _sites(actaudit.audit(str(path), x))
    assert list(sites) == ["b.act"]  # the arm that ran
    assert sites["b.act"]["dead_units"] == [3]  # b's dead channel by construction, not a's (0)


@pytest.mark.realmodel
def test_silero_decoder_relu_has_its_128_channels() -> None:
    """silero-vad's decoder ReLU feeds Conv1d(128, 1, 1): its producer is untraceable, its consumer decides."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("silero_vad")
    assert spec is not None and spec.origin is not None, "silero-vad is installed by the Makefile"
    path = Path(spec.origin).parent / "data" / "silero_vad_16k_op15.onnx"
    audio = (np.random.default_rng(11).standard_normal((4, 512)) * 0.1).astype(np.float32)
    feed = {"input": audio, "state": np.zeros((2, 4, 128), np.float32), "sr": np.array(16000, np.int64)}
    from actaudit.backends.onnx import backend
    from actaudit.data import DataSource

    cap = backend.capture(
        backend.load(path),
        DataSource(lambda: iter([([], feed)]), "t"),
        samples=None,
        stuck_fraction=0.01,
        axis_overrides=[],
    )
    (relu,) = [r for r in cap.sites if "decoder" in r.info.name and r.info.kind == "relu"]
    assert relu.info.units == 128 and relu.info.unit_axis == 1 and relu.info.unit_axis_source == "consumer"


def test_failure_of_the_instrumented_graph_is_an_internal_error(tmp_path, monkeypatch) -> None:
    """Exit 3 and a message about actaudit, not the model, when only the instrumented graph fails."""
    from click.testing import CliRunner

    from actaudit.backends.onnx import capture as onnx_capture
    from actaudit.cli import cli

    m = SqueezeGelu().eval()
    x = np.random.default_rng(12).standard_normal((4, 4, 7)).astype(np.float32)
    path = tmp_path / "m.onnx"
    _to_onnx(m, x, path)
    data = tmp_path / "x.npy"
    np.save(data, x)

    def broken(self, sess, outs, feeds):  # stands for a reduction onnxruntime rejects at run time
        raise RuntimeError("axis 2 is not in valid range [-2,1]")

    monkeypatch.setattr(onnx_capture._Runner, "_run", broken)
    r = CliRunner().invoke(cli, ["audit", str(path), "--calib", str(data)])
    assert r.exit_code == 3
    assert "internal error" in r.stderr and "where the model itself runs" in r.stderr


class HandSwish(nn.Module):
    """``h * sigmoid(1.702 h)`` and ``g * sigmoid(g)`` written by hand, and a plain sigmoid head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(13)
        self.fc = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.bias[:] = torch.tensor([0.0, -40.0, 0.0, -40.0])  # units 1, 3 dead (silu)
            self.head.bias[:] = torch.tensor([30.0, 0.0])  # unit 0 saturated (sigmoid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        g = self.fc2(h * torch.sigmoid(1.702 * h))
        return torch.sigmoid(self.head(g * torch.sigmoid(g)))


@pytest.mark.parametrize("fmt", ["eager", "torchscript", "torch.export"])
def test_hand_written_swish_is_one_silu_site(tmp_path, fmt) -> None:
    m = HandSwish().eval()
    x = np.random.default_rng(14).standard_normal((32, 3)).astype(np.float32)
    model: object = m
    if fmt == "torchscript":
        model = str(tmp_path / "s.ts")
        torch.jit.save(torch.jit.trace(m, torch.from_numpy(x)), model)
    elif fmt == "torch.export":
        model = str(tmp_path / "s.pt2")
        torch.export.save(torch.export.export(m, (torch.from_numpy(x),)), model)
    with torch.no_grad():
        h = m.fc(torch.from_numpy(x)).numpy().astype(np.float64)
    z = 1.702 * h  # measured where the stuck region is SiLU's
    dead = {int(u) for u in np.flatnonzero((z > -6.14).sum(0) == 0)}
    sites = list(_sites(actaudit.audit(model, x)).values())
    assert [(s["kind"], s["params"]) for s in sites] == [
        ("silu", {"beta": 1.702}),
        ("silu", {}),
        ("sigmoid", {}),
    ]
    assert set(sites[0]["dead_units"]) == dead == {1, 3}
    assert sites[2]["saturated_units"] == [0]


def test_fused_transformer_fast_path_is_written_out(tmp_path) -> None:
    """TorchScript takes TransformerEncoderLayer's fused fast path: its GELU is written out from the
    op's own weights and reads as the eager layer's sites do (a masked call, which is not written
    out, stays listed: tests/test_fused_families.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested-tensor advice
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, activation="gelu")
        m = nn.TransformerEncoder(layer, 2).eval()
    path = tmp_path / "t.ts"
    torch.jit.save(torch.jit.script(m), str(path))
    x = np.random.default_rng(15).standard_normal((4, 5, 16)).astype(np.float32)
    d = actaudit.audit(str(path), x).to_dict()
    assert not [u for u in d["uncovered"] if u["op"] == "aten::_transformer_encoder_layer_fwd"]
    script = _sites(actaudit.audit(str(path), x))
    # Eager runs the layer op by op (the fast path is off under the capture): both GELUs are sites.
    eager = _sites(actaudit.audit(m, x))
    for got in (eager, script):
        # F.gelu(linear1(x)) inside each layer: named after linear1 (formerly layers.0/gelu)
        assert {n: s["units"] for n, s in got.items()} == {
            "layers.0.linear1.gelu": 32,
            "layers.1.linear1.gelu": 32,
        }
        assert {n: s.get("former_name") for n, s in got.items()} == {
            "layers.0.linear1.gelu": "layers.0/gelu",
            "layers.1.linear1.gelu": "layers.1/gelu",
        }
    for n, s in eager.items():
        for k in ("min", "max"):
            assert script[n]["pre_activation"][k] == pytest.approx(s["pre_activation"][k], abs=1e-4)
        # the fused kernel rounds differently: one of 20 tokens flipping sign moves the mean by 1/640
        assert script[n]["fire_rate"]["mean"] == pytest.approx(s["fire_rate"]["mean"], abs=0.01)


def test_last_batch_of_one_squeezed_by_the_model_is_still_counted() -> None:
    """``squeeze()`` drops the batch axis of a last batch of 1 sample: that batch still counts."""

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(18)
            self.fc = nn.Linear(3, 4)
            with torch.no_grad():
                self.fc.bias[2] = 30.0  # saturated high on every sample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(x).unsqueeze(1).squeeze())

    x = np.random.default_rng(19).standard_normal((9, 3)).astype(np.float32)
    d = actaudit.audit(M().eval(), x, batch_size=4).to_dict()
    (site,) = d["sites"]
    assert (
        site["units"] == 4 and site["coverage"]["samples"] == 9 and site["coverage"]["elements_per_unit"] == 9
    )
    assert site["saturated_units"] == [2] and d["uncovered"] == []
