"""An audit that saw nothing, or left activations out, never passes a ``--fail-on`` gate silently.

The counts the tests expect come from the models as built here (how many fused layers,
how many activation modules), not from the capture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from actaudit.cli import cli
from actaudit.gates import coverage_result, parse_gate

LAYERS = 2


class _FusedMLP(nn.Module):
    """Two layers whose ReLU runs inside ``aten::_addmm_activation``: no capture sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 16) * 0.3)
        self.b1 = nn.Parameter(torch.zeros(16))
        self.w2 = nn.Parameter(torch.randn(16, 16) * 0.3)
        self.b2 = nn.Parameter(torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._addmm_activation(self.b2, torch._addmm_activation(self.b1, x, self.w1), self.w2)


def _fused_mlp(path: Path) -> Path:
    torch.manual_seed(0)
    ts = torch.jit.trace(_FusedMLP().eval(), torch.randn(2, 16))
    nodes = [n.kind() for n in ts.inlined_graph.nodes()]
    assert nodes.count("aten::_addmm_activation") == LAYERS
    ts.save(str(path))
    return path


class _Mixed(nn.Module):
    """One visible ReLU, then a ReLU fused into ``aten::_addmm_activation``, which no capture sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.act = nn.ReLU()
        self.w = nn.Parameter(torch.randn(16, 16) * 0.3)
        self.b = nn.Parameter(torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._addmm_activation(self.b, self.act(self.fc(x)).reshape(-1, 16), self.w)


def _script(model: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    with torch.no_grad():
        torch.jit.trace(model.eval(), torch.randn(*shape), check_trace=False).save(str(path))
    return path


def _audit(model: Path, *extra: str, shape: str = "4x5x16") -> tuple[int, dict[str, object], str]:
    args = ["audit", str(model), "--trust-code", "--input-shape", shape, "--format", "json", *extra]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads(r.stdout), r.stderr


def test_hidden_activations_fail_the_gate(tmp_path: Path) -> None:
    model = _fused_mlp(tmp_path / "mlp.ts")
    code, rep, err = _audit(model, "--fail-on", "dead>0", shape="4x16")
    summary = rep["summary"]
    assert isinstance(summary, dict)
    assert summary["sites"] == 0 and summary["uncovered"] == LAYERS
    assert summary["activations_found"] == LAYERS and summary["audited_fraction"] == 0.0
    assert code == 1 and rep["passed"] is False
    gates = {g["gate"]: g for g in rep["gates"]}  # type: ignore[union-attr]
    assert gates["dead>0"]["passed"] is True  # the user's gate alone would have passed
    [cov] = [g for name, g in gates.items() if name.startswith("coverage")]
    assert cov["passed"] is False and len(cov["failing_sites"]) == LAYERS
    assert "failed: coverage" in err

    code, rep, err = _audit(model, "--fail-on", "dead>0", "--allow-uncovered", shape="4x16")
    assert code == 0 and rep["passed"] is True
    assert [g["gate"] for g in rep["gates"]] == ["dead>0"]  # type: ignore[union-attr]
    assert any("gates judged the audited sites only" in w for w in rep["warnings"])  # type: ignore[union-attr]


def test_model_without_activations_fails_the_gate(tmp_path: Path) -> None:
    model = _script(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4)), tmp_path / "lin.ts", (4, 5, 16))
    code, rep, _ = _audit(model, "--fail-on", "dead>0")
    assert code == 1 and rep["summary"]["activations_found"] == 0  # type: ignore[index]
    assert rep["summary"]["audited_fraction"] is None  # type: ignore[index]
    # the coverage gate fails on no site even when the user gates the uncovered count itself
    code, _, _ = _audit(model, "--fail-on", "uncovered>5")
    assert code == 1
    code, rep, _ = _audit(model, "--fail-on", "dead>0", "--allow-uncovered")
    assert code == 0
    code, rep, _ = _audit(model)  # no gate: nothing to pass or fail
    assert code == 0 and rep["gates"] == []


def test_partly_covered_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _script(_Mixed(), tmp_path / "mixed.ts", (2, 5, 16))
    code, rep, _ = _audit(model, "--fail-on", "dead>100")
    summary = rep["summary"]
    assert isinstance(summary, dict)
    assert summary["sites"] == 1 and summary["uncovered"] == 1 and summary["audited_fraction"] == 0.5
    assert code == 1
    # a model-wide gate on the uncovered count takes charge of the uncovered activations
    code, rep, _ = _audit(model, "--fail-on", "dead>100", "--fail-on", "uncovered>1")
    assert code == 0 and len(rep["gates"]) == 2  # type: ignore[arg-type]
    code, _, _ = _audit(model, "--fail-on", "dead>100", "--fail-on", "uncovered>0")
    assert code == 1


@pytest.mark.parametrize(
    ("sites", "uncovered", "allow", "fails"),
    [(0, [], False, True), (0, [], True, False), (3, ["a"], False, True), (3, [], False, False)],
)
def test_coverage_result(sites: int, uncovered: list[str], allow: bool, fails: bool) -> None:
    r = coverage_result([parse_gate("dead>0")], sites, uncovered, allow)
    assert (r is not None and r.failed) == fails
    assert coverage_result([], sites, uncovered, allow) is None  # no gate asked for, none added
