"""``.safetensors`` weights: read memory-mapped into the model, equal to the file, the file untouched.

Run as a script to measure the peak memory of loading a generated state_dict of SIZE MB
(``python tests/test_load_safetensors.py 1024``); the files are made in a temporary folder.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from actaudit.backends.torch.load import load_torch

ARCH = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    def net():
        return Net()

    def tied():
        return Tied()

    def mlp(layers, width):
        return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    """
)


def _files(tmp_path: Path, sd: dict[str, torch.Tensor]) -> tuple[Path, Path]:
    arch = tmp_path / "arch.py"
    arch.write_text(ARCH)
    weights = tmp_path / "w.safetensors"
    save_file(sd, str(weights))
    return arch, weights


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _net_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "conv.weight": (4, 3, 3, 3),
        "conv.bias": (4,),
        "bn.weight": (4,),
        "bn.bias": (4,),
        "bn.running_mean": (4,),
        "bn.running_var": (4,),
        "fc.weight": (2, 4),
        "fc.bias": (2,),
    }
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    sd["bn.running_var"] = sd["bn.running_var"].abs()
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    return sd


def test_loaded_weights_equal_the_file_bit_for_bit(tmp_path: Path) -> None:
    sd = _net_state()
    arch, weights = _files(tmp_path, sd)
    before = _sha(weights)
    tm = load_torch(weights, arch=f"{arch}:net")
    got = tm.eager.state_dict()  # type: ignore[union-attr]
    assert sorted(got) == sorted(sd)
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    # an edit of the loaded model (the rewrite folds into biases in place) never reaches the file
    with torch.no_grad():
        tm.eager.fc.bias.add_(1.0)  # type: ignore[union-attr]
    assert _sha(weights) == before
    assert torch.equal(load_torch(weights, arch=f"{arch}:net").eager.fc.bias, sd["fc.bias"])  # type: ignore[union-attr]


def test_other_dtypes_are_converted_to_the_models(tmp_path: Path) -> None:
    sd = _net_state(1)
    sd["fc.weight"] = sd["fc.weight"].half()
    arch, weights = _files(tmp_path, sd)
    model = load_torch(weights, arch=f"{arch}:net").eager
    assert model.fc.weight.dtype == torch.float32  # type: ignore[union-attr]
    assert torch.equal(model.fc.weight, sd["fc.weight"].float())  # type: ignore[union-attr]


def test_tied_weights_stay_tied(tmp_path: Path) -> None:
    # a state_dict that lists one shared weight under two names (torch.save keeps the sharing)
    arch = tmp_path / "arch.py"
    arch.write_text(ARCH)
    ns: dict[str, object] = {}
    exec(compile(ARCH, str(arch), "exec"), ns)
    src = ns["tied"]()  # type: ignore[operator]
    weights = tmp_path / "tied.pt"
    torch.save(src.state_dict(), weights)
    model = load_torch(weights, arch=f"{arch}:tied").eager
    assert model.a.weight is model.b.weight  # type: ignore[union-attr]
    assert torch.equal(model.a.weight, src.a.weight)  # type: ignore[union-attr]


# -- peak memory ------------------------------------------------------------------------------
PROBE = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{root!r}]
    import torch
    from actaudit.backends.torch.load import load_torch

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    before = status("VmRSS")
    tm = load_torch({weights!r}, arch={arch!r})
    peak = status("VmHWM") - before
    n = sum(p.numel() * p.element_size() for p in tm.eager.parameters())
    print(peak / n)
    """
)


def peak_ratio(size_mb: int, folder: Path, root: str | None = None) -> float:
    """Peak extra resident memory of loading ``size_mb`` MB of float32 weights, in copies of the weights.

    ``root``: the source tree whose ``actaudit`` is measured (this one by default).
    """
    width = 1024
    layers = max(1, size_mb * 2**20 // (width * width * 4))
    arch = folder / "arch.py"
    arch.write_text(ARCH + f"\n\ndef build():\n    return mlp({layers}, {width})\n")
    weights = folder / "big.safetensors"
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i in range(layers):
        sd[f"{i}.weight"] = torch.randn(width, width, generator=g)
        sd[f"{i}.bias"] = torch.randn(width, generator=g)
    save_file(sd, str(weights))
    del sd
    root = root or str(Path(__file__).resolve().parents[1])
    code = PROBE.format(root=root, weights=str(weights), arch=f"{arch}:build")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_is_about_one_copy_of_the_weights(tmp_path: Path) -> None:
    # before: the model's initial weights plus the file's, two copies at once
    assert peak_ratio(256, tmp_path) < 1.4


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with tempfile.TemporaryDirectory() as d:
        print(
            f"{size} MB float32: peak extra RSS = {peak_ratio(size, Path(d), *(sys.argv[2:3])):.2f} × the weights"
        )
