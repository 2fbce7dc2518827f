"""One module's own forward as a graph, for edits when the whole model does not trace.

``torch.fx`` cannot trace a whole Hugging Face model (keyword inputs, caches, checks on
shapes), but the module that calls an FFN activation usually is plain: a norm, the attention
(a leaf here), ``fc1 → act → fc2`` and a residual add. Its forward (unwrapped from decorators
such as gradient checkpointing) is traced with its first input only and every child a leaf;
the other inputs keep their defaults, which only the leaves read.
"""

from __future__ import annotations

import dis
import inspect
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from torch import fx, nn


class _Tracer(fx.Tracer):
    """Children stay leaves; ``a, b = proxy`` unpacks (the tuple a leaf such as an attention returns)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True

    def iter(self, obj: fx.Proxy) -> Iterator[Any]:
        frame = sys._getframe(2)  # the traced forward (past Proxy.__iter__)
        after = [i for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti]
        if after and after[0].opname == "UNPACK_SEQUENCE":
            return iter([obj[k] for k in range(int(after[0].argval))])  # type: ignore[index]
        return super().iter(obj)


def trace_local(module: nn.Module) -> fx.GraphModule:
    """``module``'s forward as a graph over its children (shared, not copied); raises when it does not trace."""
    inner = inspect.unwrap(type(module).forward)
    shell_type = type(
        "Local" + type(module).__name__, (nn.Module,), {"forward": lambda self, x: inner(self, x)}
    )
    shell: nn.Module = nn.Module.__new__(shell_type)
    shell.__dict__ = dict(module.__dict__)  # the same children, parameters and settings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = _Tracer().trace(shell)
    return fx.GraphModule(shell, graph)


def site_node(gm: fx.GraphModule, child: str) -> fx.Node | None:
    """The one call of child module ``child`` in a local graph (None when it is called other than once)."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) == child]
    return calls[0] if len(calls) == 1 else None
