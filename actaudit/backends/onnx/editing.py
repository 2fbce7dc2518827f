"""The ONNX rewrite and prune editors as :mod:`actaudit.backends.base` ``Surgery`` / ``Pruner``.

The protocols pass models around as opaque objects; each method here checks that what
comes back is the ``ModelProto`` the editor built.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import onnx

from ...data import DataSource
from ...edit.cuts import Edits
from ...edit.graph import Graph
from ...verdicts import SiteVerdict
from .prune import OnnxPruner
from .surgery import OnnxSurgeon


def _proto(model: object) -> onnx.ModelProto:
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"the ONNX editor was given a {type(model).__name__}, not a ModelProto")
    return model


class OnnxRewriteEditor(OnnxSurgeon):
    """The ONNX rewrite surgeon as the ``Surgery`` protocol."""

    def outputs(
        self, model: object, source: DataSource, samples: int | None, batches: int | None
    ) -> Iterator[list[np.ndarray]]:
        return super().outputs(_proto(model), source, samples, batches)

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        staged: AbstractContextManager[Path] = super().stage(_proto(model), notes, out, force)
        return staged

    def written_slopes(self, model: object) -> list[tuple[str, str, object]]:
        return list(super().written_slopes(_proto(model)))

    def original_slopes(self) -> list[tuple[str, str, object]]:
        return list(super().original_slopes())

    def trainable(self, model: object) -> bool:
        return super().trainable(_proto(model))

    def frozen_parameters(self, model: object) -> list[str]:
        """An ONNX graph has no trainable flag: nothing is frozen."""
        return []


class OnnxPruneEditor(OnnxPruner):
    """The ONNX pruner as the ``Pruner`` protocol."""

    @property
    def written_data(self) -> Path | None:
        data: Path | None = self.surgeon.written_data
        return data

    def graph(self, model: object, shapes: dict[str, tuple[int, ...]]) -> Graph:
        return super().graph(_proto(model), shapes)

    def site_values(self, model: object, sites: list[SiteVerdict]) -> dict[str, tuple[str, str] | str]:
        return super().site_values(_proto(model), list(sites))

    def apply(self, model: object, graph: Graph, edits: Edits) -> onnx.ModelProto:
        return super().apply(_proto(model), graph, edits)

    def outputs(self, model: object, source: DataSource, samples: int | None) -> Iterator[list[np.ndarray]]:
        produced: Iterator[list[np.ndarray]] = super().outputs(_proto(model), source, samples)
        return produced

    def stage(self, model: object, notes: list[str], out: Path, force: bool) -> AbstractContextManager[Path]:
        staged: AbstractContextManager[Path] = super().stage(_proto(model), notes, out, force)
        return staged

    def count_params(self, model: object) -> int:
        return super().count_params(_proto(model))
