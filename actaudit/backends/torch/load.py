"""Load a PyTorch checkpoint of any supported format into something callable.

Nothing is unpickled with ``weights_only=False`` unless the caller passed
``trust_pickle=True``: that mode runs code from the file. TorchScript and
``torch.export`` files are loaded only after the static checks of :mod:`.trust`
pass, or with ``trust_code=True``.
"""

from __future__ import annotations

import inspect
import io
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, TypeGuard, Unpack, cast

import torch

from ...data import InputSpec, import_callable
from ...detect import EXPORT, SAFETENSORS, TORCH_SAVE, TORCHSCRIPT, detect_format
from ...errors import InputError, UntrustedPickleError
from .archive import read_once
from .export_trust import guarded_export_load
from .graphsites import GraphSite, export_graph_sites, torchscript_graph_sites
from .trust import check_torchscript, program_output
from .verdicts import check_cached

# A checkpoint's weights by state-dict key.
StateDict = dict[str, torch.Tensor]
# A model as the backend runs, writes and reloads it: a module (eager, TorchScript, a program's
# GraphModule) or a torch.export program.
Runnable = torch.nn.Module | torch.export.ExportedProgram


class LoadKeys(TypedDict, total=False):
    """The keyword options of :func:`load_torch`."""

    arch: str | None
    state_key: str | None
    trust_pickle: bool
    trust_code: bool
    device: str
    strip_prefixes: tuple[str, ...]
    non_strict: bool


class _StateDictKeys(TypedDict, total=False):
    """How a state_dict's keys are matched to the model (``--strip-prefix``, ``--non-strict``)."""

    strip_prefixes: tuple[str, ...]
    non_strict: bool


STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model")
_MAX_NAMES = 8


@dataclass
class TorchModel:
    fmt: str  # torchscript | torch.export | pickled-module | state_dict
    module: torch.nn.Module  # what gets called
    eager: torch.nn.Module | None  # set for eager modules (function-level capture)
    graph_sites: list[GraphSite] | None  # set for compiled graphs (dispatch-level capture)
    inputs: list[InputSpec]
    notes: list[str] = field(default_factory=list)
    example_inputs: tuple[object, ...] | None = None
    exported: torch.export.ExportedProgram | None = None  # for rewriting
    fixed_batch: int | None = None  # a program exported with a static batch dimension
    folder: Path | None = None  # a Hugging Face folder it was built from


def load_torch(
    path: str | Path,
    *,
    arch: str | None = None,
    state_key: str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    device: str = "cpu",
    strip_prefixes: tuple[str, ...] = (),
    non_strict: bool = False,
) -> TorchModel:
    p = Path(path)
    fmt = _as_torch_sees_it(p, detect_format(p))
    dev = _device(device)
    if arch is not None and fmt in (TORCHSCRIPT, EXPORT):
        raise InputError(
            f"--arch {arch} applies to state_dict checkpoints, but {p} is a {fmt} program that carries its own code",
            hint="drop --arch to audit the program as it is",
        )
    keys: _StateDictKeys = {"strip_prefixes": tuple(strip_prefixes), "non_strict": non_strict}
    if fmt == SAFETENSORS:
        return _load_safetensors(p, arch, state_key, dev, **keys)
    if fmt == TORCHSCRIPT:
        data = read_once(p)  # one read: the bytes checked are the bytes loaded
        if not trust_code:
            check_cached(
                data, p, check_torchscript
            )  # these exact bytes: checked now, or passed this checker before
        return _load_torchscript(data, p, dev)
    if fmt == EXPORT:
        return _load_export(read_once(p), p, dev, trust_code)
    if fmt == TORCH_SAVE:
        return _load_pickle(p, arch, state_key, trust_pickle, dev, **keys)
    raise InputError(f"{p} is an {fmt} model, not a PyTorch checkpoint")


def _as_torch_sees_it(p: Path, fmt: str) -> str:
    """A zip that torch's loaders would run as TorchScript is TorchScript, whatever its names' case.

    ``torch.load`` hands any archive holding ``constants.pkl`` to ``torch.jit.load``, and
    torch's reader finds ``CODE/`` where ``code/`` is asked for: such a file must take the
    TorchScript checks, not the pickle path.
    """
    if fmt != TORCH_SAVE:
        return fmt
    try:
        names = torch._C.PyTorchFileReader(str(p)).get_all_records()
    except Exception:
        return fmt  # not a zip torch can read: a legacy pickle, or damaged (the loader says so)
    if "constants.pkl" in names or any(n.lower().startswith("code/") for n in names):
        return TORCHSCRIPT
    return fmt


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(
            f"--device {device!r} is not a torch device", hint="use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine", hint="use --device cpu")
    return dev


def _load_torchscript(data: bytes, p: Path, dev: torch.device) -> TorchModel:
    try:
        with program_output():  # __setstate__ may print (only with --trust-code)
            m = torch.jit.load(io.BytesIO(data), map_location=dev)
    except Exception as e:
        raise InputError(f"cannot load TorchScript archive {p}: {_short(e)}") from None
    return from_script(m)


def from_script(m: torch.jit.ScriptModule) -> TorchModel:
    """A loaded (or in-memory) ``ScriptModule``: captured at op level, since script modules take no hooks."""
    m.eval()
    names = _script_input_names(m)
    return TorchModel("torchscript", m, None, torchscript_graph_sites(m), [InputSpec(n) for n in names])


def _script_input_names(m: torch.jit.ScriptModule) -> list[str]:
    try:
        return [a.name for a in cast("torch._C.ScriptMethod", m.forward).schema.arguments[1:]]
    except Exception:
        return []


def _load_export(data: bytes, p: Path, dev: torch.device, trust_code: bool = False) -> TorchModel:
    try:
        with warnings.catch_warnings(), program_output():
            warnings.simplefilter("ignore")
            ep = torch.export.load(io.BytesIO(data)) if trust_code else guarded_export_load(data, p)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot load torch.export program {p}: {_short(e)}") from None
    return from_exported(ep, dev)


def from_exported(ep: torch.export.ExportedProgram, dev: torch.device) -> TorchModel:
    """A loaded (or in-memory) ``ExportedProgram`` as a model to audit."""
    gm = ep.module()
    if dev.type != "cpu":
        gm = gm.to(dev)
    specs = []
    example = None
    try:
        example = ep.example_inputs[0] if ep.example_inputs else None
    except Exception:
        example = None
    names = list(ep.graph_signature.user_inputs)
    for i, name in enumerate(names):
        shape: tuple[int | None, ...] | None = None
        dtype = "float32"
        if example is not None and i < len(example) and isinstance(example[i], torch.Tensor):
            shape = (None, *example[i].shape[1:])
            dtype = str(example[i].dtype).replace("torch.", "")
        specs.append(InputSpec(name, shape, dtype))
    tm = TorchModel(
        "torch.export", gm, None, export_graph_sites(gm), specs, example_inputs=example, exported=ep
    )
    tm.fixed_batch = _static_batch(gm)
    if tm.fixed_batch is not None:
        tm.notes.append(
            f"the program was exported with a fixed batch size of {tm.fixed_batch}; "
            f"calibration data is fed {tm.fixed_batch} samples at a time"
        )
    return tm


def _static_batch(gm: torch.fx.GraphModule) -> int | None:
    """The batch size a program is specialised to, or None when dim 0 is dynamic."""
    sizes = set()
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None or len(shape) == 0:
            continue
        if not isinstance(shape[0], int):
            return None
        sizes.add(int(shape[0]))
    return sizes.pop() if len(sizes) == 1 else None


def pickle_globals(p: Path) -> list[str]:
    """Classes and functions a torch.save pickle refers to, found without executing it."""
    try:
        with zipfile.ZipFile(p) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(name)
    except (zipfile.BadZipFile, StopIteration, UnicodeDecodeError, ValueError, OSError):
        # A damaged archive (a member name that is not UTF-8, a bad header): scan the raw bytes.
        data = p.read_bytes()
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:
        pass
    return found


_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.", "_codecs.", "numpy.")


def _unsafe_names(globals_: list[str]) -> str:
    """`` (a.B, c.D)``: every global outside the safe modules, in file order; protocol-2
    pickles say ``__builtin__`` for ``builtins``."""
    names = [
        ("builtins." + g[len("__builtin__.") :]) if g.startswith("__builtin__.") else g for g in globals_
    ]
    foreign = list(dict.fromkeys(g for g in names if not g.startswith(_SAFE_PREFIXES)))
    if not foreign:
        return ""
    shown = ", ".join(foreign[:20]) + (f" and {len(foreign) - 20} more" if len(foreign) > 20 else "")
    return f" ({shown})"


def _load_pickle(
    p: Path,
    arch: str | None,
    state_key: str | None,
    trust: bool,
    dev: torch.device,
    **keys: Unpack[_StateDictKeys],
) -> TorchModel:
    try:
        obj = torch.load(str(p), map_location=dev, weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            what = _unsafe_names(pickle_globals(p))
            raise UntrustedPickleError(
                f"refusing to load {p}: it holds pickled Python objects{what}, and unpickling them runs code from the file",
                hint="pass --trust-pickle only if you trust its origin, or save a state_dict, TorchScript or torch.export file instead",
            ) from None
        obj = _load_untrusted(p, dev)
    except Exception as e:
        raise InputError(f"cannot read PyTorch checkpoint {p}: {_short(e)}") from None
    if isinstance(obj, torch.nn.Module):
        _no_arch(p, arch)
        return _eager("pickled-module", obj, dev, [])
    if isinstance(obj, dict):
        return _from_dict(p, obj, arch, state_key, dev, **keys)
    raise InputError(f"{p} holds a {type(obj).__name__}, not a model, state_dict or training checkpoint")


def _load_untrusted(p: Path, dev: torch.device) -> object:
    from ...data.sources import cwd_importable

    try:
        # the model's classes import from the user's project, as with python -m
        with program_output(), cwd_importable():
            return torch.load(str(p), map_location=dev, weights_only=False)
    except (ModuleNotFoundError, AttributeError) as e:
        raise InputError(
            f"cannot unpickle {p}: {_short(e)}",
            hint="the model's classes must be importable: run from its project or add it to PYTHONPATH",
        ) from None
    except Exception as e:
        raise InputError(f"cannot unpickle {p}: {_short(e)}") from None


def _is_state_dict(d: dict[str, object]) -> TypeGuard[dict[str, torch.Tensor]]:
    return (
        bool(d)
        and all(isinstance(k, str) for k in d)
        and all(isinstance(v, torch.Tensor) for v in d.values())
    )


def _from_dict(
    p: Path,
    obj: dict[str, object],
    arch: str | None,
    state_key: str | None,
    dev: torch.device,
    strip_prefixes: tuple[str, ...] = (),
    non_strict: bool = False,
) -> TorchModel:
    notes = []
    sd: object = obj
    if state_key is not None:
        for part in state_key.split("."):
            if not isinstance(sd, dict) or part not in sd:
                keys = list(sd)[:_MAX_NAMES] if isinstance(sd, dict) else []
                raise InputError(
                    f"--state-key {state_key!r}: no key {part!r} in {p}", hint=f"top-level keys: {keys}"
                )
            sd = sd[part]
        notes.append(f"weights from key {state_key!r}")
    elif not _is_state_dict(obj):
        for k in STATE_KEYS:
            if k in obj and isinstance(obj[k], (dict, torch.nn.Module)):
                sd = obj[k]
                notes.append(f"weights from key {k!r}")
                break
        else:
            keys = [str(k) for k in list(obj)[:_MAX_NAMES]]
            raise InputError(
                f"{p} is a dict without model weights under any of {list(STATE_KEYS)}",
                hint=f"its keys are {keys}; pass --state-key KEY",
            )
    if isinstance(sd, torch.nn.Module):
        _no_arch(p, arch)
        return _eager("pickled-module", sd, dev, notes)
    entry = cast("dict[str, object]", sd)  # a list or a number fails the checks below too
    if not _is_state_dict(entry):
        raise InputError(f"{p}: the selected entry is not a state_dict (a dict of tensors)")
    if arch is None:
        raise InputError(
            f"{p} is a state_dict: the weights without the code that builds the model",
            hint="pass --arch MODULE:CALLABLE or --arch path/to/file.py:CALLABLE, a function that returns the model",
        )
    model = _build(arch) if non_strict else _build_once(arch)
    weights = _strip_given_prefixes(p, entry, strip_prefixes, notes)
    weights = _strip_prefix(weights, model, notes)
    weights = _as_loaded(model, weights)
    if non_strict:
        weights = _matching_keys(p, model, weights, notes)
    _check_keys(p, model, weights)
    _load_weights(model, weights)
    return _eager("state_dict", model, dev, notes)


def _load_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """The checkpoint's tensors become the model's own where that is safe, so the model's initial
    weights are freed instead of overwritten: a memory-mapped ``.safetensors`` file then costs
    one copy of the weights (its pages, read as they are used), not two.

    Copied instead when the model ties weights (assigning would untie them) or when two checkpoint
    tensors share memory (an edit of one would change the other); a tensor whose dtype differs
    from the model's is converted, as a copy would have done.
    """
    current = model.state_dict(keep_vars=True)
    if _shared([*current.values()]) or _shared([*sd.values()]):
        model.load_state_dict(sd, strict=True)
        return
    fitted = {k: v if v.dtype == current[k].dtype else v.to(current[k].dtype) for k, v in sd.items()}
    model.load_state_dict(fitted, strict=True, assign=True)


def _shared(tensors: list[torch.Tensor]) -> bool:
    """Do any two of ``tensors`` use the same memory?"""
    ptrs = [t.untyped_storage().data_ptr() for t in tensors if t.untyped_storage().nbytes()]
    return len(set(ptrs)) < len(ptrs)


def _no_arch(p: Path, arch: str | None) -> None:
    if arch is not None:
        raise InputError(
            f"--arch {arch} applies to state_dict checkpoints, but {p} holds a whole pickled module",
            hint="drop --arch to audit the pickled module as it is",
        )


def _load_safetensors(
    p: Path, arch: str | None, state_key: str | None, dev: torch.device, **keys: Unpack[_StateDictKeys]
) -> TorchModel:
    """A ``.safetensors`` state_dict: raw tensors behind a JSON header, read without unpickling."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(
            f"{p} is a safetensors file and the safetensors package is not installed",
            hint="pip install safetensors",
        ) from None
    if state_key is not None:
        raise InputError(f"--state-key applies to training checkpoints; {p} is a flat safetensors state_dict")
    try:
        # Tensors on a CPU device are views of a private memory map of the file: no copy is
        # made here, pages are read as they are used, and writes never reach the file.
        with safe_open(str(p), framework="pt", device=str(dev)) as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:
        raise InputError(f"cannot read safetensors file {p}: {_short(e)}") from None
    if not sd:
        raise InputError(f"safetensors file {p} holds no tensors")
    return _from_dict(p, dict(sd), arch, None, dev, **keys)


def _strip_given_prefixes(p: Path, sd: StateDict, prefixes: tuple[str, ...], notes: list[str]) -> StateDict:
    """--strip-prefix, in order: keep the keys that start with each prefix, without it.

    Keys without the prefix are dropped (an EMA copy or a loss module beside the model in a
    Lightning checkpoint), and the note says how many.
    """
    for prefix in prefixes:
        kept = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if not kept:
            sample = ", ".join(list(sd)[:3])
            raise InputError(
                f"--strip-prefix {prefix!r}: no key of {p} starts with it", hint=f"keys look like {sample}"
            )
        dropped = len(sd) - len(kept)
        notes.append(
            f"stripped {prefix!r} from {len(kept)} keys"
            + (f"; dropped {dropped} keys without it" if dropped else "")
        )
        sd = kept
    return sd


def _matching_keys(p: Path, model: torch.nn.Module, sd: StateDict, notes: list[str]) -> StateDict:
    """--non-strict: the checkpoint's keys that fit the model (name and shape); the rest listed in a note.

    Model weights the checkpoint lacks stay fatal: an audit of initial weights would mislead.
    """
    expected = model.state_dict()
    fit = {k: v for k, v in sd.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    rest = [k for k in sd if k not in fit]
    if rest:
        more = f" and {len(rest) - _MAX_NAMES} more" if len(rest) > _MAX_NAMES else ""
        notes.append(
            f"--non-strict: ignored {len(rest)} checkpoint keys: {', '.join(rest[:_MAX_NAMES])}{more}"
        )
    return fit


# --arch models built in a reusing_arch_models() block, by spec: later state_dicts load into them.
_BUILT: ContextVar[dict[str, torch.nn.Module] | None] = ContextVar("_BUILT", default=None)


@contextmanager
def reusing_arch_models() -> Iterator[None]:
    """Within the block, ``--arch`` builds its model once; each later state_dict replaces all its weights.

    For a run over many checkpoints of one architecture (``actaudit history``): the builder's
    code runs once and its random initialisation is paid once. Only strict loads reuse a model
    (every parameter and buffer comes from the checkpoint, key for key); ``--non-strict`` builds
    afresh, so no weight of an earlier checkpoint can survive into a later one.
    """
    token = _BUILT.set({})
    try:
        yield
    finally:
        _BUILT.reset(token)


def _build_once(arch: str) -> torch.nn.Module:
    built = _BUILT.get()
    if built is None:
        return _build(arch)
    if arch not in built:
        built[arch] = _build(arch)
    return built[arch]


def _build(arch: str) -> torch.nn.Module:
    fn = import_callable(arch, "--arch")
    try:
        model = fn()
    except Exception as e:
        raise InputError(f"--arch {arch}: calling it raised {type(e).__name__}: {_short(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--arch {arch} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _strip_prefix(sd: StateDict, model: torch.nn.Module, notes: list[str]) -> StateDict:
    expected = set(model.state_dict())
    for prefix in ("module.", "_orig_mod.", "model."):
        if sd and all(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in expected):
            notes.append(f"stripped the {prefix!r} prefix from every key")
            return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _as_loaded(model: torch.nn.Module, sd: StateDict) -> StateDict:
    """The checkpoint's keys as ``load_state_dict`` sees them: after each module's load pre-hooks.

    Old checkpoints load into today's modules through these hooks: ``weight_norm``'s
    ``weight_g`` / ``weight_v`` become ``parametrizations.weight.original0/1``. The hooks run,
    parent before child as ``load_state_dict`` runs them, on a copy of the dict (the tensors are
    shared, not copied). A hook that raises leaves the keys as they were: the key check then
    reports them.
    """
    mapped = dict(sd)
    metadata = getattr(sd, "_metadata", None) or {}
    try:
        for name, module in model.named_modules():
            hooks = list(getattr(module, "_load_state_dict_pre_hooks", {}).values())
            for hook in hooks:
                hook(mapped, f"{name}." if name else "", metadata.get(name, {}), True, [], [], [])
    except Exception:
        return dict(sd)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapped.items()):
        return dict(sd)
    return mapped


def _check_keys(p: Path, model: torch.nn.Module, sd: StateDict) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if names:
            more = f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else ""
            problems.append(f"{label}: {', '.join(names[:_MAX_NAMES])}{more}")
    if problems:
        raise InputError(
            f"state_dict {p} does not fit the --arch model: " + "; ".join(problems),
            hint="check that --arch builds the same architecture the checkpoint was trained with",
        )


def _eager(fmt: str, model: torch.nn.Module, dev: torch.device, notes: list[str]) -> TorchModel:
    model = model.to(dev)
    try:
        names = [
            n
            for n, prm in inspect.signature(model.forward).parameters.items()
            if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)
        ]
    except (TypeError, ValueError):
        names = []
    return TorchModel(fmt, model, model, None, [InputSpec(n) for n in names], notes=notes)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 240 else text[:240] + " …"
