"""Site names: the PyTorch module path the dynamo exporter recorded, and ``#k`` for repeated names.

A functional call (a node outside an activation module) is named after the module whose
node produced its input (:func:`actaudit.naming.derived_base`), as the PyTorch backend names it.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any, Protocol

from ...kinds import ACTIVATION_MODULES, Activation
from ...naming import derived_base, named_sites
from . import proto as onnx


class _Named(Protocol):
    base: str  # the name before de-duplication
    name: str  # the unique final name, set by :func:`_dedupe`
    derived: str | None  # the base after the module that produced the input, if any
    former: str | None  # the name by the former rule, set by :func:`_dedupe` where it differs


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


def _derived(scope: Any, node: onnx.NodeProto, base: str, module: str, x: str) -> str | None:
    """``conv2.relu`` for a functional node whose input a module's node produced; None otherwise."""
    if not base or base == module:  # no exporter metadata, or an activation module
        return None
    producer = scope.producer(x)
    scopes = _meta(producer, "pkg.torch.onnx.name_scopes") if producer is not None else None
    classes = _meta(producer, "pkg.torch.onnx.class_hierarchy") if producer is not None else None
    if not scopes or len(scopes) < 2:
        return None
    if classes and len(classes) >= 2 and classes[-2].rsplit(".", 1)[-1] in ACTIVATION_MODULES:
        return None  # an activation module's output is another site's
    return derived_base(scopes[-2], module, base.rpartition("/")[2])


def _dedupe(sites: Sequence[_Named]) -> None:
    for s, (name, former) in zip(sites, named_sites([(s.base, s.derived) for s in sites]), strict=True):
        s.name, s.former = name, former
