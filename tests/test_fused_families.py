"""Every op that hides an activation is audited or listed in ``uncovered``, by op family; sites are
floating-point tensors only.

Oracles: numpy recomputations from the models' own weights (recurrent pre-activations, a Gather
of clipped indices), module lists read from the models as built, and op names chosen here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as oh
from torch import nn

import actaudit
from actaudit.backends.onnx.single import hidden_reason as onnx_hidden
from actaudit.backends.torch.fused import hidden_reason as torch_hidden
from actaudit.verdicts import Settings


# -- the family rules, on names ----------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "_transformer_encoder_layer_fwd",
        "_transformer_decoder_only_layer_fwd",
        "_addmm_activation",
        "_thnn_fused_lstm_cell",
        "_thnn_fused_gru_cell",
        "_cudnn_rnn",
        "miopen_rnn",
        "quantized_lstm_cell",
        "linear_relu",  # quantized::linear_relu
        "conv2d_relu",
        "add_relu_",
        "linear_relu_dynamic",
        "log_sigmoid_forward",
    ],
)
def test_torch_ops_that_hide_an_activation(name: str) -> None:
    assert torch_hidden(name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "relu",
        "relu_",
        "relu6_",
        "gelu",
        "sigmoid",
        "hardtanh_",
        "clamp_min_",
        "mkldnn_rnn_layer",  # written out by the capture
        "glu",  # audited as a site
        "tanh_backward",
        "threshold_backward",
        "_native_multi_head_attention",  # its only nonlinearity is a softmax
        "scaled_dot_product_attention",
        "linear",
        "addmm",
        "_softmax",
        "layer_norm",
    ],
)
def test_torch_ops_that_hide_nothing(name: str) -> None:
    assert torch_hidden(name) is None


@pytest.mark.parametrize(
    ("domain", "op", "hides"),
    [
        ("com.microsoft", "DynamicQuantizeLSTM", True),
        ("com.microsoft", "AttnLSTM", True),
        ("", "GRU", True),
        ("custom.domain", "FusedGRUCell", True),
        ("com.microsoft", "QLinearSigmoid", True),
        ("com.microsoft", "QLinearLeakyRelu", True),
        ("my.ops", "ConvRelu", True),
        ("", "ThresholdedRelu", True),
        ("com.microsoft", "Attention", False),
        ("com.microsoft", "MultiHeadAttention", False),
        ("com.microsoft", "FusedConv", False),  # audited by its activation attribute instead
        ("", "MatMul", False),
        ("", "DynamicQuantizeLinear", False),
        ("com.microsoft", "GeluGrad", False),
    ],
)
def test_onnx_op_families(domain: str, op: str, hides: bool) -> None:
    node = oh.make_node(op, ["x"], ["y"], domain=domain)
    assert (onnx_hidden(node) is not None) == hides


# -- ONNX: integer tensors are not activations --------------------------------------------
def test_clip_of_integer_indices_is_not_a_site(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    table = rng.randn(10, 4).astype(np.float32)
    graph = oh.make_graph(
        [
            oh.make_node("Cast", ["x"], ["xi"], to=T.INT64),
            oh.make_node("Clip", ["xi", "lo", "hi"], ["ci"]),
            oh.make_node("Gather", ["table", "ci"], ["emb"]),
            oh.make_node("Relu", ["emb"], ["y"]),
        ],
        "g",
        [oh.make_tensor_value_info("x", T.FLOAT, ["n", 3])],
        [oh.make_tensor_value_info("y", T.FLOAT, ["n", 3, 4])],
        [
            oh.make_tensor("lo", T.INT64, [], [0]),
            oh.make_tensor("hi", T.INT64, [], [9]),
            onnx.numpy_helper.from_array(table, "table"),
        ],
    )
    path = tmp_path / "intclip.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), str(path))
    x = rng.uniform(-2, 12, (40, 3)).astype(np.float32)
    report = actaudit.audit(str(path), x)
    assert [(v.info.kind, v.info.units) for v in report.sites] == [("relu", 4)]
    assert report.uncovered == []
    emb = table[np.clip(x.astype(np.int64), 0, 9)]  # [n, 3, 4]
    want = (emb > 0).reshape(-1, 4).mean(axis=0)
    np.testing.assert_allclose(report.sites[0].fire_rate, want, atol=1e-6)


# -- ONNX: onnxruntime's quantized LSTM ----------------------------------------------------
class _LSTMHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.lstm(x)[0]))


def test_dynamic_quantize_lstm_is_listed(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    fp32, int8 = tmp_path / "lstm.onnx", tmp_path / "lstm_q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated, and warns
        torch.onnx.export(
            _LSTMHead().eval(),
            (torch.randn(2, 5, 8),),
            str(fp32),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    ops = [(n.domain, n.op_type) for n in onnx.load(str(int8)).graph.node]
    assert ("com.microsoft", "DynamicQuantizeLSTM") in ops
    x = np.random.RandomState(2).randn(6, 5, 8).astype(np.float32)
    for path, op in ((fp32, "LSTM"), (int8, "com.microsoft.DynamicQuantizeLSTM")):
        report = actaudit.audit(str(path), x, fail_on=["dead>0"])
        assert [u.op for u in report.uncovered] == [op]
        assert [v.info.kind for v in report.sites] == ["sigmoid"]  # the head stays audited
        assert not report.passed  # the coverage gate: the LSTM's gates were not audited


# -- torch: recurrent families --------------------------------------------------------------
class _RNNNet(nn.Module):
    def __init__(self, nonlinearity: str) -> None:
        super().__init__()
        self.rnn = nn.RNN(4, 6, num_layers=2, batch_first=True, nonlinearity=nonlinearity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _rnn_oracle(m: nn.RNN, x: np.ndarray) -> list[np.ndarray]:
    """Per-layer pre-activations [T*N, H], recomputed in numpy from the module's weights."""
    p = {k: v.detach().numpy().astype(np.float64) for k, v in m.named_parameters()}
    act = np.tanh if m.nonlinearity == "tanh" else (lambda z: np.maximum(z, 0))
    seq = x.astype(np.float64).transpose(1, 0, 2)  # [T, N, F]
    out = []
    for layer in range(m.num_layers):
        h = np.zeros((seq.shape[1], m.hidden_size))
        pre, hs = [], []
        for t in range(seq.shape[0]):
            z = seq[t] @ p[f"weight_ih_l{layer}"].T + p[f"bias_ih_l{layer}"]
            z = z + h @ p[f"weight_hh_l{layer}"].T + p[f"bias_hh_l{layer}"]
            h = act(z)
            pre.append(z)
            hs.append(h)
        out.append(np.concatenate(pre))
        seq = np.stack(hs)
    return out


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_gates_eager_and_torchscript(tmp_path: Path, nonlinearity: str) -> None:
    torch.manual_seed(3)
    m = _RNNNet(nonlinearity).eval()
    x = np.random.RandomState(4).randn(12, 7, 4).astype(np.float32) * 2
    pre = _rnn_oracle(m.rnn, x)
    path = tmp_path / "rnn.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about the RNN's shape checks
        torch.jit.trace(m, torch.from_numpy(x[:2])).save(str(path))
    for model in (m, str(path)):
        report = actaudit.audit(model, x, trust_code=True)
        assert report.uncovered == []
        assert [(v.info.name, v.info.kind) for v in report.sites] == [
            (f"rnn.l{k}.hidden", nonlinearity) for k in range(2)
        ]
        for v, z in zip(report.sites, pre, strict=True):
            assert v.stats.samples == len(x)
            np.testing.assert_allclose(v.stats.min, z.min(axis=0), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(v.stats.max, z.max(axis=0), rtol=1e-4, atol=1e-4)


def test_quantized_dynamic_lstm_module_is_listed() -> None:
    torch.manual_seed(5)
    m = _LSTMHead().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, and warns
        q = torch.ao.quantization.quantize_dynamic(m, {nn.LSTM}, dtype=torch.qint8)
    report = actaudit.audit(q, np.random.RandomState(6).randn(4, 5, 8).astype(np.float32))
    assert [u.name for u in report.uncovered] == ["lstm"]
    assert [v.info.kind for v in report.sites] == ["sigmoid"]


@pytest.mark.parametrize(("activation", "norm_first"), [("relu", False), ("gelu", True)])
def test_fast_path_encoder_layers_are_written_out(tmp_path: Path, activation: str, norm_first: bool) -> None:
    """A TorchScript TransformerEncoder traced on its fast path runs each layer as one
    ``aten::_transformer_encoder_layer_fwd``: its feed-forward activation is written out from the
    op's weights and named as the eager layer's site. Oracle: the slow path's ``linear1`` outputs,
    read with forward hooks."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16, 2, 32, batch_first=True, activation=activation, norm_first=norm_first
    )
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    layers = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, nn.TransformerEncoderLayer)]
    path = tmp_path / "enc.ts"
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(2, 5, 16), check_trace=False)
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]
    assert kinds.count("aten::_transformer_encoder_layer_fwd") == len(layers)  # the fast path was traced
    traced.save(str(path))
    x = np.random.RandomState(7).randn(4, 5, 16).astype(np.float32)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        mod.linear1.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o.detach()))
        for n, mod in layers
    ]
    with torch.enable_grad():  # a tensor that requires grad keeps the layers on their slow path
        model(torch.from_numpy(x).requires_grad_(True))
    for h in hooks:
        h.remove()
    report = actaudit.audit(str(path), x, trust_code=True)
    assert report.uncovered == []
    # activation(linear1(x)) in each layer: named after linear1, formerly "{layer}/{activation}"
    assert [(v.info.name, v.info.former_name, v.info.kind, v.info.units) for v in report.sites] == [
        (f"{n}.linear1.{activation}", f"{n}/{activation}", activation, 32) for n, _ in layers
    ]
    for v, (n, _) in zip(report.sites, layers, strict=True):
        z = seen[n].numpy().reshape(-1, 32)
        np.testing.assert_allclose(v.stats.min, z.min(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(v.stats.max, z.max(axis=0), rtol=1e-4, atol=1e-4)
    eager = actaudit.audit(model, x)  # the capture itself keeps eager layers off their fast path
    assert [v.info.name for v in eager.sites] == [v.info.name for v in report.sites]


def test_masked_fast_path_call_stays_uncovered(tmp_path: Path) -> None:
    """A fast-path call with a padding mask is not written out: listed by module, never dropped."""
    torch.manual_seed(0)

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1, enable_nested_tensor=False
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
            mask[:, -1] = True
            return self.enc(x, src_key_padding_mask=mask)

    path = tmp_path / "masked.ts"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Masked().eval(), torch.randn(2, 5, 16), check_trace=False)
    if "aten::_transformer_encoder_layer_fwd" not in [n.kind() for n in traced.inlined_graph.nodes()]:
        pytest.skip("this torch build took the slow path for a masked call")
    traced.save(str(path))
    report = actaudit.audit(
        str(path), np.random.RandomState(8).randn(4, 5, 16).astype(np.float32), trust_code=True
    )
    assert report.sites == []
    assert [u.op for u in report.uncovered] == ["aten::_transformer_encoder_layer_fwd"]


# -- GLU: the sigmoid half is a site ----------------------------------------------------------
class _GLUNet(nn.Module):
    """A conv GLU over channels (F.glu, dim=1) and a GLU module over features (nn.GLU, dim=-1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3)
        self.fc = nn.Linear(4, 10)
        self.gate = nn.GLU()
        with torch.no_grad():
            for layer, half in ((self.conv, 4), (self.fc, 5)):
                layer.weight.mul_(0.1)
                layer.bias.zero_()
                layer.bias[half : half + 2] = 40.0  # the first two gate units: always saturated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.glu(self.conv(x), 1)  # [N, 4, 4]
        return self.gate(self.fc(h))  # [N, 4, 5]


def _glu_oracle(m: _GLUNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each GLU's gate pre-activations [elements, units], read with forward hooks (no capture code)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.conv.register_forward_hook(lambda mod, a, o: seen.__setitem__("glu", o)),
        m.fc.register_forward_hook(lambda mod, a, o: seen.__setitem__("gate", o)),
    ]
    with torch.no_grad():
        m(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    conv, fc = seen["glu"].numpy().astype(np.float64), seen["gate"].numpy().astype(np.float64)
    return {
        "glu": conv[:, 4:].transpose(0, 2, 1).reshape(-1, 4),
        "gate": fc[..., 5:].reshape(-1, 5),
    }


def _saturated(z: np.ndarray, settings: Settings) -> list[int]:
    s = 1 / (1 + np.exp(-z))
    stuck = (s * (1 - s)) < settings.stuck_fraction * 0.25  # sigmoid's derivative peaks at 1/4
    return [int(u) for u in np.flatnonzero(stuck.mean(axis=0) >= settings.saturation_rate)]


@pytest.mark.parametrize("fmt", ["eager", "script", "export"])
def test_glu_gates_are_sites(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(8)
    m = _GLUNet().eval()
    x = np.random.RandomState(9).randn(16, 3, 6).astype(np.float32)
    model: object = m
    if fmt == "script":
        model = str(tmp_path / "glu.ts")
        torch.jit.script(m).save(model)
    elif fmt == "export":
        model = str(tmp_path / "glu.pt2")
        ep = torch.export.export(m, (torch.from_numpy(x),), dynamic_shapes={"x": {0: torch.export.Dim("b")}})
        torch.export.save(ep, model)
    report = actaudit.audit(model, x, trust_code=True)
    oracle = _glu_oracle(m, x)
    assert [(v.info.name, v.info.kind, v.info.units) for v in report.sites] == [
        ("glu", "sigmoid", 4),
        ("gate", "sigmoid", 5),
    ]
    assert report.uncovered == []
    for v in report.sites:
        z = oracle[v.info.name]
        np.testing.assert_allclose(v.stats.min, z.min(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(v.stats.max, z.max(axis=0), rtol=1e-4, atol=1e-4)
        assert v.saturated_units == _saturated(z, report.settings) == [0, 1]


def test_glu_in_onnx_matches_pytorch(tmp_path: Path) -> None:
    """The exporter writes F.glu as Split → Sigmoid → Mul: the sigmoid is the gate site, named and
    counted as the PyTorch backend does."""
    torch.manual_seed(8)
    m = _GLUNet().eval()
    x = np.random.RandomState(9).randn(16, 3, 6).astype(np.float32)
    path = tmp_path / "glu.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.from_numpy(x[:2]),),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("n")},),
        )
    report = actaudit.audit(str(path), x)
    oracle = _glu_oracle(m, x)
    assert [(v.info.name, v.info.kind, v.info.units) for v in report.sites] == [
        ("glu", "sigmoid", 4),
        ("gate", "sigmoid", 5),
    ]
    for v in report.sites:
        z = oracle[v.info.name]
        np.testing.assert_allclose(v.stats.min, z.min(axis=0), rtol=1e-4, atol=1e-4)
        assert v.saturated_units == _saturated(z, report.settings) == [0, 1]


class _Indices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.emb(x.long().clamp(0, 9)))


@pytest.mark.parametrize("fmt", ["eager", "script"])
def test_torch_clamp_of_indices_is_not_a_site(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(10)
    m = _Indices().eval()
    x = np.random.RandomState(11).uniform(-2, 12, (20, 3)).astype(np.float32)
    model: object = m
    if fmt == "script":
        model = str(tmp_path / "idx.ts")
        torch.jit.script(m).save(model)
    report = actaudit.audit(model, x, trust_code=True)
    assert [(v.info.kind, v.info.units) for v in report.sites] == [("relu", 4)]
    emb = m.emb.weight.detach().numpy()[np.clip(x.astype(np.int64), 0, 9)]
    np.testing.assert_allclose(report.sites[0].fire_rate, (emb > 0).reshape(-1, 4).mean(axis=0), atol=1e-6)
