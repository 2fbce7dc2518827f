"""Seeded builders of hostile checkpoints whose payload only writes a marker file.

Each builder returns the path it wrote; the payload, if it ever ran, would create
``marker`` (a path under the test's tmp_path), so a test proves it did not run by
checking that ``marker`` does not exist. TorchScript needs the source of scripted
classes, hence a module of its own.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn


class SetstateWriter(nn.Module):
    """A module whose ``__setstate__`` (run by ``torch.jit.load``) writes ``path``.

    No submodules: a custom ``__setstate__`` must restore every field itself.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x - 0.5)

    @torch.jit.export
    def __getstate__(self) -> tuple[bool, str]:
        return (self.training, self.path)

    @torch.jit.export
    def __setstate__(self, state: tuple[bool, str]) -> None:
        self.training = state[0]
        self.path = state[1]
        torch.save(torch.ones(1), self.path)


class FileReader(nn.Module):
    """A module whose forward copies bytes of ``path`` into its output (into --per-unit JSON)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        secret = torch.from_file(self.path, size=4, dtype=torch.uint8).float()
        return torch.relu(self.lin(x) + secret)


class Warner(nn.Module):
    """A module whose forward writes its own text (with a terminal escape) through warnings.warn."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("\x1b[31mWARNED-BY-THE-PROGRAM", stacklevel=2)
        return torch.relu(self.lin(x))


class Talker(nn.Module):
    """Prints from __setstate__ (at load) and from forward (at every call), with a terminal escape."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("\x1b[2JCALLED")
        return torch.relu(x @ self.w)

    @torch.jit.export
    def __getstate__(self) -> tuple[bool, torch.Tensor]:
        return (self.training, self.w)

    @torch.jit.export
    def __setstate__(self, state: tuple[bool, torch.Tensor]) -> None:
        self.training = state[0]
        self.w = state[1]
        print("\x1b[2JLOADED")


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


def _seeded(cls: type[nn.Module], *args: str) -> nn.Module:
    torch.manual_seed(0)
    return cls(*args).eval()


def ts_setstate(dirpath: Path, marker: Path) -> Path:
    out = dirpath / "setstate.ts"
    torch.jit.script(_seeded(SetstateWriter, str(marker))).save(str(out))
    return out


def ts_from_file(dirpath: Path, secret: Path) -> Path:
    out = dirpath / "weights.pt"  # a TorchScript archive renamed like a state_dict
    torch.jit.script(_seeded(FileReader, str(secret))).save(str(out))
    return out


def ts_warner(dirpath: Path) -> Path:
    out = dirpath / "warner.ts"
    torch.jit.script(_seeded(Warner)).save(str(out))
    return out


def ts_talker(dirpath: Path) -> Path:
    out = dirpath / "talker.ts"
    torch.jit.script(_seeded(Talker)).save(str(out))
    return out


def ts_plain(dirpath: Path) -> Path:
    out = dirpath / "plain.ts"
    torch.jit.script(_seeded(Plain)).save(str(out))
    return out


def edit_members(src: Path, dst: Path, edit: dict[str, bytes | None], suffix_match: bool = True) -> Path:
    """Copy a zip archive, replacing (or with None: dropping) members whose name ends with a key."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for key, new in edit.items():
                if info.filename.endswith(key) if suffix_match else info.filename == key:
                    data = new  # type: ignore[assignment]
            if data is not None:
                zout.writestr(info, data)
    return dst


def ts_custom_namespace(dirpath: Path) -> Path:
    """Plain's code edited by hand to call an operator of an unknown namespace."""
    src = ts_plain(dirpath)
    with zipfile.ZipFile(src) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".py") and "hostile_models" in n)
        code = zf.read(name).decode()
    assert "torch.relu(" in code
    code = code.replace("torch.relu(", "ops.evil.run(")
    return edit_members(src, dirpath / "custom_ns.ts", {name: code.encode()}, suffix_match=False)


class _Touch:
    """Unpickling calls ``Path(marker).touch()``: creates the marker, nothing else."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def pt2_plain(dirpath: Path) -> Path:
    out = dirpath / "plain.pt2"
    ep = torch.export.export(_seeded(Plain), (torch.zeros(2, 4),))
    torch.export.save(ep, str(out))
    return out


def pt2_pickled_example(dirpath: Path, marker: Path) -> Path:
    """A .pt2 whose example inputs unpickle a call (torch.export.load would fall back to weights_only=False)."""
    buf = io.BytesIO()
    torch.save(((_Touch(marker),), {}), buf)
    return edit_members(
        pt2_plain(dirpath), dirpath / "pickled_example.pt2", {"sample_inputs/model.pt": buf.getvalue()}
    )


def pt2_aoti(dirpath: Path) -> Path:
    """A .pt2 carrying an AOTInductor member (a shared library torch would dlopen)."""
    src = pt2_plain(dirpath)
    dst = dirpath / "aoti.pt2"
    edit_members(src, dst, {})
    with zipfile.ZipFile(src) as zf:
        root = zf.namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF not really")
    return dst
