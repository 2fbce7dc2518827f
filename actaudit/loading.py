"""A model loaded through the backend registry, with the facts every report names."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

from .backends.base import CaptureOptions, LoadOptions, ModelHandle, backend_for, wrap_in_memory
from .data import DataSource, InputSpec
from .detect import detect_format
from .errors import InputError
from .fileio import sha256_file
from .naming import base_of, former_note, matches
from .options import AuditOptions, parse_axis_overrides
from .stats import AxisOverride, Capture


class LoadedModel:
    """A model of any backend (:class:`ModelHandle`) with the facts the report needs."""

    def __init__(self, handle: ModelHandle, fmt: str, path: str | None, sha256: str | None) -> None:
        self.handle = handle
        self.fmt = fmt
        self.path = path
        self.sha256 = sha256

    @property
    def backend(self) -> str:
        return self.handle.backend  # "torch" | "onnx"

    @property
    def inputs(self) -> list[InputSpec]:
        return list(self.handle.inputs)

    @property
    def notes(self) -> list[str]:
        return list(self.handle.notes)

    def capture(self, source: DataSource, opts: AuditOptions, *, keep_outputs: bool = False) -> Capture:
        overrides = parse_axis_overrides(opts.unit_axis)
        cap = self.handle.capture(
            source,
            CaptureOptions(
                samples=opts.samples,
                stuck_fraction=opts.settings.stuck_fraction,
                axis_overrides=overrides,
                progress=opts.progress,
                keep_outputs=keep_outputs,
                # rewrite and prune (keep_outputs) need the negative moments: always full statistics
                relu_from_output=opts.relu_from_output and not keep_outputs,
            ),
        )
        check_axis_overrides(overrides, cap)
        return cap


def check_axis_overrides(overrides: Sequence[AxisOverride], cap: Capture) -> None:
    """A ``--unit-axis`` glob that matches no site is a typo in the option: in CI it must not pass silently."""

    renamed: dict[str, str] = {}
    for o in overrides:
        names = set()
        for n in [*(s.info.name for s in cap.sites), *(u.name for u in cap.uncovered)]:
            names |= {n, base_of(n)}
        names |= {s.info.module for s in cap.sites}
        if not any(fnmatch.fnmatchcase(n, o.glob) for n in names if n):
            by_former = [s for s in cap.sites if matches(o.glob, s.info.name, s.info.former_name)[1]]
            if by_former:
                renamed.update((s.info.former_name or "", s.info.name) for s in by_former)
                continue
            listed = [s.info.name for s in cap.sites]
            shown = ", ".join(listed[:12]) + (" …" if len(listed) > 12 else "")
            raise InputError(
                f"--unit-axis {o.glob}={o.axis}: the glob {o.glob!r} matches no site",
                hint=f"sites are: {shown or 'none'} (actaudit inspect MODEL lists them)",
            )
    note = former_note("--unit-axis", renamed.items())
    if note:
        cap.warnings.append(note)


def load_options(opts: AuditOptions) -> LoadOptions:
    return LoadOptions(
        arch=opts.arch,
        state_key=opts.state_key,
        trust_pickle=opts.trust_pickle,
        trust_code=opts.trust_code,
        strip_prefixes=tuple(opts.strip_prefix),
        non_strict=opts.non_strict,
        device=opts.device,
        provider=opts.provider,
        threads=opts.threads,
    )


def folder_sha256(p: Path) -> str:
    """One digest of a checkpoint folder: the name and SHA-256 of each JSON and weight file, in name order."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt"):
            h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def load_model(model: object, opts: AuditOptions) -> LoadedModel:
    """A path (any supported format), an in-memory ``nn.Module`` / ``ExportedProgram`` or an ONNX ``ModelProto``."""
    lopts = load_options(opts)
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        fmt = detect_format(p)
        sha = folder_sha256(p) if p.is_dir() else sha256_file(p)
        handle, name = backend_for(fmt).load(p, fmt, lopts)
        return LoadedModel(handle, name, str(p), sha)
    wrapped = wrap_in_memory(model, lopts)
    if wrapped is not None:
        return LoadedModel(wrapped[0], wrapped[1], None, None)
    raise InputError(
        f"cannot audit a {type(model).__name__}: give a path, a torch.nn.Module (eager or ScriptModule), "
        "a torch.export.ExportedProgram or an onnx.ModelProto"
    )
