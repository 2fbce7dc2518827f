"""Site names: the PyTorch module path the dynamo exporter recorded, and ``#k`` for repeated names."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Protocol

from ...kinds import ACTIVATION_MODULES, Activation
from ...naming import site_names
from . import proto as onnx


class _Named(Protocol):
    base: str  # the name before de-duplication
    name: str  # the unique final name, set by :func:`_dedupe`


def _meta(node: onnx.NodeProto, key: str) -> list[str] | None:
    for p in node.metadata_props:
        if p.key == key:
            try:
                v = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return [str(s) for s in v] if isinstance(v, (list, tuple)) else None
    return None


def _torch_name(node: onnx.NodeProto, act: Activation) -> tuple[str, str]:
    """(site name, module path) from the dynamo exporter's metadata, or ("", "") without it."""
    scopes = _meta(node, "pkg.torch.onnx.name_scopes")
    classes = _meta(node, "pkg.torch.onnx.class_hierarchy")
    if not scopes or len(scopes) < 2:
        return "", ""
    module = scopes[-2]
    mtype = classes[-2].rsplit(".", 1)[-1] if classes and len(classes) >= 2 else ""
    if module and (mtype in ACTIVATION_MODULES or mtype == "GLU"):
        return module, module  # nn.GLU's gate: named after the module, as the PyTorch backend does
    op = ""
    if classes and classes[-1].startswith("aten."):
        op = classes[-1].split(".")[1]
    op = (op or act.kind).rstrip("_")
    if op == "hardtanh" and act.kind == "relu6":
        op = "relu6"  # in-place F.relu6 reaches the exporter as aten.hardtanh_(x, 0, 6)
    return (f"{module}/{op}" if module else op), module


def _dedupe(sites: Sequence[_Named]) -> None:
    for s, name in zip(sites, site_names(s.base for s in sites), strict=True):
        s.name = name
