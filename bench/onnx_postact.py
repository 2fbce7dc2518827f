"""Where the ONNX audit's per-batch time goes: plain inference against instrumented variants, in process.

    python bench/onnx_postact.py [--model cnn|mlp|both] [--rounds 7]

Variants, each its own onnxruntime session over the same batches, timed in alternated
rounds (median seconds per pass over the batches, ratios to plain within each round):

* ``plain``: the model as given;
* ``audit``: the audit's fast instrumented session (``_Runner``: session run + host folding);
* ``audit-run``: the same session's ``run`` only;
* ``audit-post`` / ``audit-post-run``: the same with ReLU sites measured from their output only
  (``relu_from_output``);
* with ``--hand``, ``post-blocked``: the same from pooling ops that keep onnxruntime's blocked layout
  (``GlobalAveragePool`` / ``GlobalMaxPool`` / ``HardSigmoid``);
* ``post+min``: ``post-blocked`` plus one ``ReduceMin`` of each pre-activation (what a read of the
  pre-activation alone costs).

``--consumers`` (with ``--onnx``) times the plain model against the same model with one more
reader of every ReLU output (a Concat, or a ReduceSum per site), whatever it computes.

Not a test: nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _variant(loaded, how: str, threads: int, prof: str = ""):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from actaudit.backends.onnx import proto as onnx
    from actaudit.backends.onnx.graph import opset_version
    from actaudit.backends.onnx.instrument import _Emitter, _Names
    from actaudit.backends.onnx.sites import find_sites

    model = onnx.ModelProto()
    model.CopyFrom(loaded)  # with the shapes load() inferred
    found = find_sites(model.graph)
    em = _Emitter(model.graph, opset_version(model), _Names(model))
    outs = []
    for s in found.sites if how != "none" else []:
        y = s.relu_out or s.y
        rank = s.rank
        assert rank is not None
        if how == "post-reshape" or rank != 4:
            if rank == 4:
                v = em.node("Reshape", [y, em.ints(0, 0, -1)])
                st: tuple[int, ...] = (2, 0)
            else:
                v, st = y, (0,)
            outs += [em.per_unit("ReduceSum", v, st), em.per_unit("ReduceSum", em.node("Mul", [v, v]), st)]
            outs += [em.per_unit("ReduceMax", v, st)]
            outs += [em.per_unit("ReduceSum", em.node("Cast", [em.node("Cast", [v], to=9)], to=1), st)]
            if how == "post+min":
                xv = em.node("Reshape", [s.x, em.ints(0, 0, -1)]) if rank == 4 else s.x
                outs.append(em.per_unit("ReduceMin", xv, st))
            continue
        outs += [em.node("GlobalAveragePool", [y]), em.node("GlobalAveragePool", [em.node("Mul", [y, y])])]
        outs += [em.node("GlobalMaxPool", [y])]
        h = em.node("HardSigmoid", [em.node("HardSigmoid", [y], alpha=1e38, beta=0.0)], alpha=1e38, beta=0.0)
        outs.append(em.node("GlobalAveragePool", [h]))
        if how == "post+min":
            outs.append(em.per_unit("ReduceMin", em.node("Reshape", [s.x, em.ints(0, 0, -1)]), (2, 0)))
    for o in outs:
        model.graph.output.append(onnx.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if prof:
        so.enable_profiling, so.profile_file_prefix = True, prof
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, outs


def bench(
    label: str, path: Path, x: np.ndarray, batch: int, rounds: int, threads: int, hand: bool = False
) -> None:
    from actaudit.backends.onnx.capture import _Runner
    from actaudit.backends.onnx.load import load
    from actaudit.backends.onnx.session import plain_session

    handle = load(path, threads=threads or None)
    plain = plain_session(handle)
    runner = _Runner(handle, 0.01, [])
    sess, outs, _ = runner.session(False)
    names = [n for o in outs.values() for n in o.names.values()]
    inp = plain.get_inputs()[0].name
    feeds = [{inp: np.ascontiguousarray(x[i : i + batch])} for i in range(0, len(x), batch)]
    nodes = len(handle.model.graph.node)
    post = _Runner(handle, 0.01, [], post=True)
    psess, pouts, _ = post.session(False)
    pnames = [n for o in pouts.values() for n in o.names.values()]
    fns = {
        "plain": lambda f: plain.run(None, f),
        "audit": lambda f: runner.run(f, batch),
        "audit-run": lambda f: sess.run(names, f),
        "audit-post": lambda f: post.run(f, batch),
        "audit-post-run": lambda f: psess.run(pnames, f),
    }
    for how in ("post-blocked", "post+min") if hand else ():
        s, o = _variant(handle.model, how, threads)
        fns[how] = lambda f, s=s, o=o: s.run(o, f)
    _alternate(f"{label}: {len(x)} samples, batch {batch}, {nodes} nodes", fns, feeds, rounds)


def _alternate(label: str, fns: dict, feeds: list, rounds: int) -> None:  # type: ignore[type-arg]
    """Every batch through every variant in a rotating order; medians over rounds, ratios to ``plain``."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for f in feeds:  # warm-up: first runs allocate
        for name in order:
            fns[name](f)
    for r in range(rounds):
        got = dict.fromkeys(order, 0.0)
        for j, f in enumerate(feeds):
            k = (r + j) % len(order)
            for name in order[k:] + order[:k]:
                t = time.perf_counter()
                fns[name](f)
                got[name] += time.perf_counter() - t
        for name in order:
            times[name].append(got[name])
    p = times["plain"]
    load_avg = os.getloadavg()
    print(f"\n## {label}, median of {rounds} alternated rounds")
    print(f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    print("| variant | s per pass | ratio to plain (median of per-round ratios) |")
    print("|---|---|---|")
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, p, strict=True))
        print(f"| {name} | {statistics.median(ts):.3f} | {ratio:.2f}× |", flush=True)


def profile(label: str, path: Path, x: np.ndarray, batch: int, threads: int, tmp: Path) -> None:
    """Kernel milliseconds per batch by op type (onnxruntime's profiler), per variant."""
    import collections
    import json

    import onnxruntime as ort

    from actaudit.backends.onnx import capture as oc
    from actaudit.backends.onnx import session as osess
    from actaudit.backends.onnx.load import load

    handle = load(path, threads=threads or None)
    made: dict[str, object] = {}

    def profiled(h, m):  # type: ignore[no-untyped-def]
        so = osess._options(h)
        so.enable_profiling, so.profile_file_prefix = True, str(tmp / "audit")
        return made.setdefault(
            "audit", ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        )

    plain = _variant(handle.model, "none", threads, str(tmp / "plain"))
    saved = oc.session_for
    oc.session_for = profiled  # type: ignore[assignment]
    try:
        runner = oc._Runner(handle, 0.01, [])
        runner.grow = False
        sess, outs, _ = runner.session(False)
    finally:
        oc.session_for = saved
    names = [n for o in outs.values() for n in o.names.values()]
    variants = {"plain": (plain[0], []), "audit": (sess, names)}
    made.clear()
    oc.session_for = profiled  # type: ignore[assignment]
    try:
        post = oc._Runner(handle, 0.01, [], post=True)
        post.grow = False
        psess, pouts, _ = post.session(False)
    finally:
        oc.session_for = saved
    variants["audit-post"] = (psess, [n for o in pouts.values() for n in o.names.values()])
    for how in ("post-blocked", "post+min"):
        variants[how] = _variant(handle.model, how, threads, str(tmp / how))
    feeds = [{"x": np.ascontiguousarray(x[i : i + batch])} for i in range(0, len(x), batch)]
    print(
        f"\n## {label}: kernel ms per batch by op ({len(feeds)} batches of {batch}, {threads or 'default'} threads)"
    )
    for name, (s, o) in variants.items():
        for f in feeds:
            s.run(o or None, f)
        by_op: collections.Counter[str] = collections.Counter()
        nodes = set()
        for e in json.loads(Path(s.end_profiling()).read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
                nodes.add(e["name"])
        total = sum(by_op.values()) / 1e3 / len(feeds)
        parts = ", ".join(f"{op} {d / 1e3 / len(feeds):.1f}" for op, d in by_op.most_common(9))
        print(f"- {name}: {total:.1f} ms, {len(nodes)} kernels — {parts}", flush=True)


def consumers(path: Path, x: np.ndarray, batch: int, rounds: int, threads: int) -> None:
    """What one more reader of each ReLU output costs, whatever it computes: the plain model against
    the same model with every ReLU output concatenated (in groups) into one tiny ReduceMax, and with
    one ReduceSum per ReLU output."""
    import onnxruntime as ort

    from actaudit.backends.onnx import proto as onnx
    from actaudit.backends.onnx.load import load

    h = load(path, threads=threads or None)
    relus = [n.output[0] for n in h.model.graph.node if n.op_type == "Relu"]

    def session(group: int, per_site: bool):  # type: ignore[no-untyped-def]
        m = onnx.ModelProto()
        m.CopyFrom(h.model)
        m.graph.initializer.append(onnx.from_array(np.array([0], np.int64), "_ax0"))
        outs = []
        for i in range(0, len(relus) if group else 0, group or 1):
            src = relus[i : i + group]
            if per_site:
                src = [f"_rs{r}" for r in src]
                for r, o in zip(relus[i : i + group], src, strict=True):
                    m.graph.node.append(onnx.make_node("ReduceSum", [r, "_ax0"], [o], keepdims=0))
            m.graph.node.append(onnx.make_node("Concat", src, [f"_cat{i}"], axis=-1))
            m.graph.node.append(onnx.make_node("ReduceMax", [f"_cat{i}"], [f"_red{i}"], keepdims=0))
            outs.append(f"_red{i}")
        for o in outs:
            m.graph.output.append(onnx.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        if h.file is not None:
            folder = str(h.file.resolve().parent)
            so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda f: sess.run(outs or None, f)

    fns = {"plain": session(0, False), "one Concat": session(len(relus), False)}
    fns["Concats of 64"] = session(64, False)
    fns["a ReduceSum per site"] = session(len(relus), True)
    inp = h.model.graph.input[0].name
    feeds = [{inp: np.ascontiguousarray(x[i : i + batch])} for i in range(0, len(x), batch)]
    _alternate(f"{path.name}: one more reader per ReLU output ({len(relus)} sites)", fns, feeds, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["cnn", "mlp", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="onnxruntime's kernel times by op instead")
    ap.add_argument(
        "--hand", action="store_true", help="also the hand-built post-blocked and post+min variants"
    )
    ap.add_argument("--onnx", type=Path, help="time this model instead (first input, data from --npy)")
    ap.add_argument("--npy", type=Path)
    ap.add_argument(
        "--consumers", action="store_true", help="with --onnx: the cost of one more reader per ReLU"
    )
    args = ap.parse_args()
    from bench.onnx_sites import mlp, resnet_like

    if args.onnx is not None and args.consumers:
        consumers(args.onnx, np.load(args.npy), 32, args.rounds, args.threads)
        return
    if args.onnx is not None:
        bench(str(args.onnx), args.onnx, np.load(args.npy), 32, args.rounds, args.threads, args.hand)
        return
    with tempfile.TemporaryDirectory(prefix="actaudit-postact-") as d:
        tmp = Path(d)
        if args.model in ("cnn", "both"):
            resnet_like(tmp / "cnn.onnx")
            x = np.random.default_rng(2).standard_normal((128, 3, 112, 112)).astype(np.float32)
            if args.profile:
                profile("ResNet-18-like CNN 112²", tmp / "cnn.onnx", x, 32, args.threads, tmp)
            else:
                bench(
                    "ResNet-18-like CNN 112²", tmp / "cnn.onnx", x, 32, args.rounds, args.threads, args.hand
                )
        if args.model in ("mlp", "both"):
            mlp(tmp / "mlp.onnx", 1000)
            x = np.random.default_rng(1).standard_normal((1024, 64)).astype(np.float32)
            if args.profile:
                profile("1,000-site MLP", tmp / "mlp.onnx", x, 32, args.threads, tmp)
            else:
                bench("1,000-site MLP", tmp / "mlp.onnx", x, 32, args.rounds, args.threads, args.hand)


if __name__ == "__main__":
    main()
