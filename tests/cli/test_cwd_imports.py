"""The ``actaudit`` console script imports the user's modules from the current folder, as ``python -m`` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

NET = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc(x))

def build():
    return Net()
"""


def _console(proj: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run as the installed script runs: its own folder first on sys.path, not the current one."""
    script = bin_dir / "actaudit"
    script.write_text("import sys\nfrom actaudit.cli import main\nsys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=proj, env=env, capture_output=True, text=True, timeout=120
    )


def test_arch_and_pickled_classes_import_from_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    proj, bin_dir = tmp_path / "proj", tmp_path / "bin"
    proj.mkdir()
    bin_dir.mkdir()
    (proj / "mynet.py").write_text(NET)
    monkeypatch.syspath_prepend(str(proj))
    import mynet  # type: ignore[import-not-found]

    try:
        net = mynet.build()
        torch.save(net.state_dict(), proj / "weights.pt")
        torch.save(net, proj / "whole.pt")
    finally:
        sys.modules.pop("mynet", None)
    shape = ("--input-shape", "2x4")
    r = _console(proj, bin_dir, "audit", "weights.pt", "--arch", "mynet:build", *shape)
    assert r.returncode == 0, r.stderr
    assert "relu" in r.stdout
    r = _console(proj, bin_dir, "audit", "whole.pt", "--trust-pickle", *shape)
    assert r.returncode == 0, r.stderr
    # Only for those imports: the folder is not left on the path of the process.
    r = _console(proj, bin_dir, "audit", "weights.pt", "--arch", "nosuchmodule:build", *shape)
    assert r.returncode == 2 and "nosuchmodule" in r.stderr
