"""A state_dict is checked through the model's own loading path: what ``load_state_dict(strict=True)``
accepts is accepted; the key report lists only what still does not fit.

The checkpoint is a real one: saved from a model built with the old ``torch.nn.utils.weight_norm``
(keys ``weight_g`` / ``weight_v``), audited against a builder that uses today's parametrisation.
The oracle is the old model itself, read with forward hooks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import actaudit
from actaudit.errors import InputError

ARCH = """
import torch
from torch import nn


def build():
    m = nn.Sequential(nn.Conv1d(3, 6, 3), nn.ReLU(), nn.Conv1d(6, 2, 3))
    m[0] = torch.nn.utils.parametrizations.weight_norm(m[0])
    return m
"""


def _old_checkpoint(tmp_path: Path, extra: dict[str, torch.Tensor] | None = None) -> tuple[Path, nn.Module]:
    torch.manual_seed(12)
    m = nn.Sequential(nn.Conv1d(3, 6, 3), nn.ReLU(), nn.Conv1d(6, 2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated, and warns
        m[0] = torch.nn.utils.weight_norm(m[0])
    with torch.no_grad():
        m[0].bias[:2] = -50.0  # two channels that never fire
    sd = m.state_dict()
    assert {"0.weight_g", "0.weight_v"} <= set(sd)
    sd.update(extra or {})
    path = tmp_path / "old.pt"
    torch.save(sd, path)
    return path, m.eval()


def _arch(tmp_path: Path) -> str:
    (tmp_path / "arch.py").write_text(ARCH)
    return f"{tmp_path / 'arch.py'}:build"


def test_old_weight_norm_keys_load(tmp_path: Path) -> None:
    path, old = _old_checkpoint(tmp_path)
    x = np.random.RandomState(13).randn(20, 3, 9).astype(np.float32)
    report = actaudit.audit(str(path), x, arch=_arch(tmp_path))
    seen: list[torch.Tensor] = []
    hook = old[1].register_forward_hook(lambda mod, a, o: seen.append(a[0]))
    with torch.no_grad():
        old(torch.from_numpy(x))
    hook.remove()
    z = seen[0].numpy()  # [N, 6, 7], the ReLU's input in the old model
    want = (z > 0).transpose(0, 2, 1).reshape(-1, 6).mean(axis=0)
    [site] = report.sites
    np.testing.assert_allclose(site.fire_rate, want, atol=1e-6)
    assert site.dead_units == [0, 1]


def test_key_report_lists_only_what_does_not_fit(tmp_path: Path) -> None:
    path, _ = _old_checkpoint(tmp_path, extra={"head.weight": torch.zeros(2, 2)})
    x = np.random.RandomState(14).randn(4, 3, 9).astype(np.float32)
    with pytest.raises(InputError) as info:
        actaudit.audit(str(path), x, arch=_arch(tmp_path))
    message = str(info.value)
    assert "unexpected: head.weight" in message
    assert "weight_g" not in message and "weight_v" not in message and "missing" not in message
    report = actaudit.audit(str(path), x, arch=_arch(tmp_path), non_strict=True)
    assert [v.info.units for v in report.sites] == [6]
    assert any("head.weight" in n for n in report.notes + report.warnings)
