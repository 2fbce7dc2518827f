"""How many dead units the default rewrite revives within 1 %, and which α the evidence suggests.

For each package-shipped model that is installed (silero-vad .jit / .onnx, PP-OCRv4 det) and
the trained fixtures: dead units, revived units, measured drift, search passes, the suggested
α of the evidence grid and its cost. With ``--oracle`` also the reference a perfect cost
estimate would reach: every dead unit measured alone at slope 0.01 (one run each), then the
longest prefix in true-cost order whose measured drift is within 1 % (bisection, measured).
Run from the repository root: ``.venv/bin/python bench/rewrite_selection.py [--oracle]``.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "rewrite"))
from test_rewrite_realmodels import LOADERS, _text_images  # noqa: E402  (the tests' seeded data)

from actaudit.rewrite import core, rewrite  # noqa: E402

FX = ROOT / "fixtures"
BUDGET, SLOPE = 0.01, 0.01


def _pkg(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def cases(tmp: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    (tmp / "loaders.py").write_text(LOADERS)
    np.save(tmp / "ocr.npy", _text_images())
    out: list[tuple[str, Path, dict[str, Any]]] = []
    sv, ocr = _pkg("silero_vad"), _pkg("rapidocr_onnxruntime")
    if sv is not None:
        out.append(
            ("silero-vad .jit", sv / "data/silero_vad.jit", {"data_loader": f"{tmp}/loaders.py:silero_jit"})
        )
        out.append(
            (
                "silero-vad .onnx",
                sv / "data/silero_vad.onnx",
                {"data_loader": f"{tmp}/loaders.py:silero_onnx"},
            )
        )
    if ocr is not None:
        out.append(
            ("PP-OCRv4 det .onnx", ocr / "models/ch_PP-OCRv4_det_infer.onnx", {"calib": str(tmp / "ocr.npy")})
        )
    calib = {"calib": str(FX / "data/trained_inputs.npy")}
    out += [("mlp_trained .ts", FX / "models/mlp_trained.ts", calib)]
    out += [
        ("transformer_ffn .pt2", FX / "models/transformer_ffn.pt2", {"calib": str(FX / "data/tokens.npy")})
    ]
    return out


def oracle(model: Path, kw: dict[str, Any]) -> int:
    """The longest true-cost-ordered prefix of dead units within the budget at slope 0.01."""
    opts = core.rewrite_options(dict(kw))
    core.validate(opts)
    s = core._start(str(model), None, opts)
    relu = [v for v in s.original.audit.sites if v.info.kind in core.REWRITABLE_KINDS]
    ok, _ = core._dry_run(s, relu, core._select(relu, opts.sites))
    units = [(n, int(u)) for n in ok for u in s.by_name[n].dead_units]
    cost = [s.measure_units({n: {u: SLOPE}}, None, "oracle").rel_l2 for n, u in units]
    order = [units[i] for i in np.argsort(cost)]

    def fits(k: int) -> bool:
        sl: dict[str, dict[int, float]] = {}
        for n, u in order[:k]:
            sl.setdefault(n, {})[u] = SLOPE
        return not sl or s.measure_units(sl, None, "oracle").rel_l2 <= BUDGET

    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def main() -> None:
    with_oracle = "--oracle" in sys.argv
    tmp = Path(tempfile.mkdtemp(prefix="actaudit-selection-"))
    print(
        "| model | dead | revived | drift | search passes | suggested α | evidence passes | evidence s |"
        + (" oracle |" if with_oracle else "")
    )
    print("| --- " * (9 if with_oracle else 8) + "|")
    for name, model, kw in cases(tmp):
        t0 = time.perf_counter()
        out = tmp / f"out{len(name)}{model.suffix}"  # written, as the CLI does: the same pass budget
        rep = rewrite(str(model), None, mode="deploy", max_drift=BUDGET, output=str(out), force=True, **kw)
        _ = time.perf_counter() - t0
        s, ev = rep.summary(), rep.evidence
        row = (
            f"| {name} | {s['dead_units']} | {s['revived_units']} | {rep.drift.rel_l2 if rep.drift else float('nan'):.4g} "
            f"| {rep.search.get('passes', '-') if rep.search else '-'} "
            f"| {ev.suggested_alpha if ev else '-'} | {ev.passes if ev else '-'} | {ev.seconds if ev else '-'} |"
        )
        if with_oracle:
            row += f" {oracle(model, kw)} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
