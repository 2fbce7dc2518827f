"""The α evidence grid against numpy (drift, leak share) and torch autograd (gradient ratio).

A two-layer MLP with some hidden units dead: ``LeakyReLU(α)`` on every hidden unit, with the
shift ``α·E[min(z, 0)]`` subtracted and without it, is recomputed here from the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from actaudit.cli import cli
from actaudit.rewrite import rewrite
from actaudit.rewrite.evidence import GRID

N, D, H, OUT = 48, 6, 8, 3  # 48 samples: under the evidence cap of 64, so every sample counts
BUDGET = 0.01


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, OUT))
    with torch.no_grad():
        net[0].bias[:3] = -8.0  # units 0-2 never fire on standard-normal inputs
    return net.eval()


def _numpy_drifts(net: nn.Sequential, x: np.ndarray, a: float) -> tuple[float, float]:
    w1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    w2 = net[2].weight.detach().double().numpy()
    z = x.astype(np.float64) @ w1.T + b1
    neg = np.minimum(z, 0.0)
    y = np.maximum(z, 0.0) @ w2.T + net[2].bias.detach().double().numpy()
    shifted = a * (neg - neg.mean(axis=0)) @ w2.T
    plain = a * neg @ w2.T
    return float(np.linalg.norm(shifted) / np.linalg.norm(y)), float(
        np.linalg.norm(plain) / np.linalg.norm(y)
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Sequential, np.ndarray, Path, Path]:
    tmp = tmp_path_factory.mktemp("evidence")
    net = _net()
    x = np.random.default_rng(1).standard_normal((N, D)).astype(np.float32)
    ts = tmp / "mlp.ts"
    torch.jit.trace(net, torch.from_numpy(x[:4])).save(str(ts))
    np.save(tmp / "x.npy", x)
    return net, x, ts, tmp / "x.npy"


def test_grid_drifts_match_numpy_and_alpha_is_the_largest_that_fits(case: tuple) -> None:
    net, x, ts, xs = case
    rep = rewrite(str(ts), str(xs), max_drift=BUDGET)
    ev = rep.evidence
    assert ev is not None and ev.grid == list(GRID) and ev.samples == N
    want = {a: _numpy_drifts(net, x, a) for a in GRID}
    for g in ev.model:
        ws, wn = want[g.alpha]
        assert g.measured
        assert g.drift_shift == pytest.approx(ws, rel=1e-3)
        assert g.drift_noshift == pytest.approx(wn, rel=1e-3)
    # keep the verdict away from the threshold, then the suggestion is the largest α within budget
    assert all(abs(ws - BUDGET) > 0.05 * BUDGET for ws, _ in want.values())
    fits = [a for a in GRID if want[a][0] <= BUDGET]
    assert ev.suggested_alpha == (max(fits) if fits else None)
    # leak share: α²·Σ min(z, 0)² / Σ max(z, 0)², from the weights
    z = (
        x.astype(np.float64) @ net[0].weight.detach().double().numpy().T
        + net[0].bias.detach().double().numpy()
    )
    leak = np.square(np.minimum(z, 0)).sum() / np.square(np.maximum(z, 0)).sum()
    (site,) = ev.sites
    for g in site.grid:
        assert g.leak == pytest.approx(g.alpha**2 * leak, rel=1e-4)
    assert site.zero_share == pytest.approx(float((z <= 0).mean()), abs=1e-9)


def test_gradient_ratio_matches_autograd(case: tuple) -> None:
    """With the same ∂L/∂h for every unit (L = Σ h), the mean |∂L/∂z| of the dead units over
    that of the live units is the ratio the report gives."""
    net, x, ts, xs = case
    rep = rewrite(str(ts), str(xs), max_drift=BUDGET)
    assert rep.evidence is not None
    (site,) = rep.evidence.sites
    with torch.no_grad():
        z0 = net[0](torch.from_numpy(x)).double()
    for g in site.grid:
        z = z0.clone().requires_grad_(True)
        F.leaky_relu(z, g.alpha).sum().backward()
        assert z.grad is not None
        per_unit = z.grad.abs().mean(0)
        ratio = float(per_unit[:3].mean() / per_unit[3:].mean())
        assert g.gradient_ratio == pytest.approx(ratio, rel=1e-6)


def test_evidence_in_the_json_and_the_table(case: tuple, tmp_path: Path) -> None:
    _, _, ts, xs = case
    args = ["rewrite", str(ts), "--calib", str(xs), "-o", str(tmp_path / "o.ts")]
    r = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)["evidence"]
    assert [g["alpha"] for g in ev["model"]] == list(GRID)
    assert {"drift_shift", "drift_no_shift", "leak_share", "gradient_ratio"} <= set(ev["model"][0])
    r = CliRunner().invoke(cli, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert "suggested α" in r.stdout and "grad. ratio" in r.stdout


class _Long(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder_stage_with_a_rather_long_descriptive_name = _net()
        self.decoder_projection_block_also_named_at_length = nn.Sequential(
            nn.Linear(OUT, 4), nn.ReLU(), nn.Linear(4, 2)
        )
        with torch.no_grad():
            self.decoder_projection_block_also_named_at_length[0].bias.fill_(50.0)  # always fires

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_projection_block_also_named_at_length(
            self.encoder_stage_with_a_rather_long_descriptive_name(x)
        )


@pytest.mark.parametrize("width", [60, 80])
def test_the_table_fits_the_terminal_and_unchanged_sites_say_why(tmp_path: Path, width: int) -> None:
    x = np.random.default_rng(2).standard_normal((N, D)).astype(np.float32)
    ts = tmp_path / "long.ts"
    torch.jit.trace(_Long().eval(), torch.from_numpy(x[:4])).save(str(ts))
    np.save(tmp_path / "x.npy", x)
    rep = rewrite(str(ts), str(tmp_path / "x.npy"), max_drift=BUDGET)
    wide = rep.render("table")
    assert max(len(line) for line in wide.splitlines()) > width  # so fitting has work to do
    fitted = rep.render("table", width=width)
    assert max(len(line) for line in fitted.splitlines()) <= width, fitted
    assert "suggested α" in fitted
    unchanged = [s for s in rep.sites if s.status == "unchanged"]
    assert unchanged, "the model should have a site without dead units"
    for s in unchanged:
        reason = "no dead units" if s.dead == 0 else s.reason
        assert reason and f"unchanged: {reason}" in wide
        assert s.to_dict()["reason"] == reason  # the JSON says the same


def test_the_html_shows_the_evidence(case: tuple) -> None:
    _, _, ts, xs = case
    rep = rewrite(str(ts), str(xs), max_drift=BUDGET)
    assert rep.evidence is not None
    page = rep.to_html()
    assert "<svg" in page and "Suggested α" in page
    for g in rep.evidence.model:  # every grid row, with the drifts the report measured
        assert f"<td>{g.alpha:g}</td><td>{g.drift_shift:.4g}</td>" in page


def test_no_dead_units_is_one_message(tmp_path: Path) -> None:
    from actaudit.rewrite.report import NO_DEAD, NO_DEAD_MODEL

    net = _net()
    with torch.no_grad():
        net[0].bias.fill_(8.0)  # every unit fires on every sample
    x = np.random.default_rng(3).standard_normal((N, D)).astype(np.float32)
    ts = tmp_path / "alive.ts"
    torch.jit.trace(net, torch.from_numpy(x[:4])).save(str(ts))
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(
        cli, ["rewrite", str(ts), "--calib", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.ts")]
    )
    assert r.exit_code == 1
    assert NO_DEAD_MODEL in r.stderr  # the reason nothing was written
    assert f"unchanged: {NO_DEAD}" in r.stdout  # the site's row
    assert NO_DEAD_MODEL in r.stdout  # the report's note
    assert not (tmp_path / "o.ts").exists()
