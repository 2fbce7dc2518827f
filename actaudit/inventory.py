"""Every file a command reads and writes, listed once and checked before the run.

Inputs are the model and every external-data file it names, the calibration data, the
``--data-loader`` and ``--arch`` files, the config file read, the ``--against`` baseline and
the reports ``merge`` combines. Outputs are ``-o``, ``--html``, ``--junit`` and ``--report``,
plus the files a writer may put beside one (an ONNX model over 2 GB gets ``OUT.data``).

:meth:`Inventory.check` refuses, before anything slow happens and whatever ``--force``
says: an output whose folder is missing or is not a folder, an output that is a link, a
folder, a FIFO or a device, an output that is an input or another output (same path after
resolving links, or same ``(st_dev, st_ino)``: hard links). Then, without ``--force``, an
output that exists. Every command uses this one check; nothing here imports torch or onnx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .fileio import check_target, code_file, same_file

_EXTERNAL = "external data"


def onnx_companion(out: str | os.PathLike[str]) -> Path:
    """The external-data file an ONNX writer puts beside ``out`` (``m.onnx`` → ``m.onnx.data``)."""
    p = Path(out)
    return p.with_name(f"{p.name}.data")


def model_files(model: str | os.PathLike[str]) -> tuple[str | None, list[Path]]:
    """The model's format (None when unknown) and its files: for ONNX, the external data it names too."""
    p = Path(model)
    if not p.is_file():
        return None, [p]
    from .detect import ONNX, detect_format
    from .onnxrefs import external_data_files

    try:
        fmt = detect_format(p)
    except InputError:
        return None, [p]
    return fmt, [p, *external_data_files(p)] if fmt == ONNX else [p]


@dataclass
class Inventory:
    """(label, path) of each input and output; :meth:`check` refuses collisions before the run."""

    inputs: list[tuple[str, Path]] = field(default_factory=list)
    outputs: list[tuple[str, Path]] = field(default_factory=list)
    # Files a writer may add beside an output: never an input, never another output, but
    # their existence is the writer's to judge (it is only known after the run whether they are written).
    beside: list[tuple[str, Path]] = field(default_factory=list)
    model_format: str | None = None

    def add_input(self, label: str, path: str | os.PathLike[str] | None) -> Inventory:
        if path:
            self.inputs.append((label, Path(path)))
        return self

    def add_model(self, label: str, path: str | os.PathLike[str] | None) -> Inventory:
        if path:
            self.model_format, files = model_files(path)
            self.inputs.append((label, files[0]))
            self.inputs += [(f"{label}'s {_EXTERNAL}", f) for f in files[1:]]
        return self

    def add_code(self, label: str, spec: str | None) -> Inventory:
        """``FILE.py:NAME`` (``--arch``, ``--data-loader``): the file is an input; ``MODULE:NAME`` is not a path."""
        return self.add_input(label, code_file(spec))

    def add_output(self, label: str, path: str | os.PathLike[str] | None) -> Inventory:
        if path:
            self.outputs.append((label, Path(path)))
        return self

    def add_beside(self, label: str, path: str | os.PathLike[str] | None) -> Inventory:
        if path:
            self.beside.append((label, Path(path)))
        return self

    def written(self) -> list[Path]:
        return [p for _, p in self.outputs]

    def check(self, force: bool) -> None:
        """Refuse a bad output place, a collision, then (without ``force``) an existing output."""
        for _, out in self.outputs:
            check_target(out, True)  # a missing folder, a link, a FIFO: refused whatever --force says
        written = self.outputs + self.beside
        for i, (label, out) in enumerate(written):
            for other_label, other in self.inputs:
                if same_file(out, other):
                    what = (
                        "the input's external data file"
                        if other_label.endswith(_EXTERNAL)
                        else "the input file"
                    )
                    raise InputError(
                        f"{label} {out} is {what} {other} (the {other_label} input)",
                        hint="inputs are never overwritten; write to another path",
                    )
            for other_label, other in written[:i]:
                if same_file(out, other):
                    raise InputError(
                        f"{label} {out} and {other_label} {other} are the same file",
                        hint="give each output its own path",
                    )
        if not force:
            for _, out in self.outputs:
                check_target(out, False)
