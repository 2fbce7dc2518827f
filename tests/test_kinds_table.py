"""The activation table of kinds.py names real things: torch ops and nn classes, ONNX op types.

Every backend reads this one table, so a typo here would silently drop a kind from an audit;
these checks ask torch and onnx themselves, not the table.
"""

from __future__ import annotations

import onnx.defs
import pytest
import torch

from actaudit.kinds import ACTIVATION_MODULES, ALL_KINDS, KINDS, ONNX_OPS, TABLE, TORCH_OPS, Family, family


def test_every_kind_is_one_row() -> None:
    assert len({k.name for k in TABLE}) == len(TABLE) == len(ALL_KINDS)
    assert set(ALL_KINDS) == set(KINDS)
    assert all(family(k.name) is k.family for k in TABLE)
    assert [k for k in ALL_KINDS if family(k) is Family.CAPPED] == ["relu6"]


@pytest.mark.parametrize("op", sorted(TORCH_OPS))
def test_torch_op_names_exist(op: str) -> None:
    """Each name is an ATen op packet, a torch function or a Tensor method (what the captures see)."""
    found = hasattr(torch.ops.aten, op) or hasattr(torch, op) or hasattr(torch.Tensor, op)
    assert found or hasattr(torch.nn.functional, op), f"{op} is neither an ATen op nor a torch function"


def test_module_names_are_torch_nn_classes() -> None:
    for name in ACTIVATION_MODULES:
        cls = getattr(torch.nn, name)
        assert isinstance(cls, type) and issubclass(cls, torch.nn.Module)


@pytest.mark.parametrize("op_type", sorted(ONNX_OPS))
def test_onnx_op_types_exist(op_type: str) -> None:
    assert onnx.defs.has(op_type), f"{op_type} is not an ai.onnx operator"


def test_a_kind_has_one_name_in_every_backend() -> None:
    """The same activation maps to the same kind whichever front end spells it."""
    pairs = {
        ("relu", "Relu"),
        ("leaky_relu", "LeakyRelu"),
        ("tanh", "Tanh"),
        ("clamp", "Clip"),
        ("prelu", "PRelu"),
    }
    for torch_op, onnx_op in pairs:
        assert TORCH_OPS[torch_op] == ONNX_OPS[onnx_op]
    assert "leaky" not in KINDS and "leaky" not in TORCH_OPS.values()
