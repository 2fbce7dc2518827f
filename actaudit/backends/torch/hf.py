"""Hugging Face checkpoint folders: the model built from ``config.json`` by the installed ``transformers``.

What runs is the library's own code: the config class of ``model_type`` and the class named
in ``architectures``, looked up by name in the ``transformers`` package (nothing from the file
is evaluated). A folder whose config maps classes to its own Python files (``auto_map``) is
refused unless ``trust_code``; pickled weights (``pytorch_model.bin``) unless ``trust_pickle``.
Weights come from safetensors files, sharded ones through an index whose every entry is checked
(plain file names inside the folder, each tensor in the shard the index names, the declared
size). Nothing is fetched from the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ...data import InputSpec
from ...errors import InputError, UntrustedCodeError, UntrustedPickleError
from ...sanitize import text
from ..base import LoadOptions
from .load import TorchModel, _device, _eager, _short

CONFIG = "config.json"
SAFE_SINGLE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLE_SINGLE, PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
MAX_JSON_BYTES = 64 << 20  # config.json and index files: far above any real one
_SHOWN = 6
_MAIN_DTYPES = {"input_ids": "int64"}
# A sequence length for synthetic ids (inspect, or an audit without data): token 0 and 1 exist in every vocabulary.
_MAIN_SHAPES: dict[str, tuple[int | None, ...]] = {"input_ids": (None, 16)}


def load_hf_folder(
    p: Path,
    dev: torch.device,
    *,
    trust_code: bool = False,
    trust_pickle: bool = False,
    non_strict: bool = False,
) -> TorchModel:
    """The model a Hugging Face checkpoint folder describes, with its weights, in eval mode."""
    transformers = _transformers(p)
    config = read_json(p / CONFIG, "config")
    if not isinstance(config, dict):
        raise InputError(f"{p / CONFIG} holds a JSON {type(config).__name__}, not an object")
    notes: list[str] = []
    auto_map = config.get("auto_map")
    if auto_map and not trust_code:
        names = text(", ".join(sorted(map(str, auto_map))))[:200] if isinstance(auto_map, dict) else "classes"
        raise UntrustedCodeError(
            f"refusing to run code from {p}: its config.json maps {names} to Python files in the folder (auto_map)",
            hint="pass --trust-code only if you trust its origin",
        )
    model = (
        _build_remote(transformers, p, config, notes)
        if auto_map
        else _build_library(transformers, p, config, notes)
    )
    sd, source = read_weights(p, trust_pickle)
    _load_into(p, model, sd, non_strict, notes)
    notes.append(f"weights from {source}")
    model.eval()
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a key/value cache is an output of no use to an audit
    tm = _eager("transformers", model, dev, notes)
    tm.folder = p
    # The one input calibration feeds (token ids, pixels or samples); the optional ones keep their defaults.
    main = getattr(model, "main_input_name", None) or (tm.inputs[0].name if tm.inputs else "input_ids")
    tm.inputs = [InputSpec(main, _MAIN_SHAPES.get(main), _MAIN_DTYPES.get(main, "float32"))]
    return tm


def _transformers(p: Path) -> ModuleType:
    # Nothing is downloaded: a hub name is never asked for, and the library is told to stay offline.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise InputError(
            f"{p} is a Hugging Face checkpoint folder and the transformers package is not installed",
            hint="pip install 'actaudit[hf]'",
        ) from None
    transformers.logging.set_verbosity_error()
    return transformers


def read_json(path: Path, what: str) -> Any:
    """A small JSON file, refused when it is not a regular file inside limits or not valid JSON."""
    if not path.is_file():
        raise InputError(f"{what} file {path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{what} file {path} has {size} bytes; a real one has far fewer")
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{what} file {path} is not valid JSON: {_short(e)}") from None


def _config_object(transformers: ModuleType, p: Path, config: dict[str, Any], notes: list[str]) -> Any:
    model_type = config.get("model_type")
    mapping = transformers.CONFIG_MAPPING
    if not isinstance(model_type, str) or model_type not in mapping:
        raise InputError(
            f"{p / CONFIG}: model_type {model_type!r} is not one transformers {transformers.__version__} knows",
            hint="upgrade transformers, or export the model to ONNX or torch.export",
        )
    try:
        cfg = mapping[model_type].from_dict(config)
    except Exception as e:
        raise InputError(f"{p / CONFIG}: transformers cannot read it: {_short(e)}") from None
    asked = getattr(cfg, "_attn_implementation", None)
    if asked not in (None, "eager", "sdpa"):
        # A hub kernel ("kernels-community/...") is code fetched and run at build time; flash
        # attention needs a GPU package. The audit measures activations, which do not depend on it.
        cfg._attn_implementation = "sdpa"
        notes.append(
            f"config.json asks for attention implementation {str(asked)[:80]!r}; the audit uses sdpa"
        )
    return cfg


def _build_library(
    transformers: ModuleType, p: Path, config: dict[str, Any], notes: list[str]
) -> Any:  # a transformers PreTrainedModel
    """The class named in ``architectures``, looked up in the installed library only."""
    cfg = _config_object(transformers, p, config, notes)
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise InputError(f"{p / CONFIG}: architectures is not a list of class names")
    pretrained = transformers.PreTrainedModel
    if archs:
        name = archs[0]
        cls = getattr(transformers, name, None) if name.isidentifier() else None
        if not (isinstance(cls, type) and issubclass(cls, pretrained)):
            raise InputError(
                f"{p / CONFIG}: architecture {name!r} is not a model class of transformers {transformers.__version__}",
                hint="upgrade transformers, or remove architectures to build the base model",
            )
        build = lambda: cls(cfg)  # noqa: E731
    else:
        name = "AutoModel for " + str(config.get("model_type"))
        build = lambda: transformers.AutoModel.from_config(cfg)  # noqa: E731
    try:
        model = build()
    except Exception as e:
        raise InputError(
            f"{p}: building {name} from config.json raised {type(e).__name__}: {_short(e)}"
        ) from None
    notes.append(
        f"built {type(model).__name__} from config.json with transformers {transformers.__version__}"
    )
    return model


def _build_remote(
    transformers: ModuleType, p: Path, config: dict[str, Any], notes: list[str]
) -> Any:  # a transformers PreTrainedModel
    """--trust-code: the classes ``auto_map`` names, imported from the folder's own Python files."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = config["auto_map"]
    if not isinstance(auto_map, dict):
        raise InputError(f"{p / CONFIG}: auto_map is not an object")
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    refs = {k: v for k, v in auto_map.items() if isinstance(v, str) and k.startswith("AutoModel")}
    ref = next((v for v in refs.values() if archs and v.endswith("." + archs[0])), None)
    ref = ref or refs.get("AutoModel") or next(iter(refs.values()), None)
    if ref is None:
        raise InputError(f"{p / CONFIG}: auto_map names no AutoModel class")
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(p), trust_remote_code=True, local_files_only=True)
        cls = get_class_from_dynamic_module(ref, str(p), local_files_only=True)
        model = cls(cfg)
    except Exception as e:
        raise InputError(
            f"{p}: building {ref} from the folder's code raised {type(e).__name__}: {_short(e)}"
        ) from None
    notes.append(f"built {type(model).__name__} from the folder's own code ({ref}; --trust-code)")
    return model


def _plain_name(p: Path, name: object, index: Path) -> Path:
    """A shard named in an index: a plain file name of this folder, never a path or a link out of it."""
    if not isinstance(name, str) or not name or name != os.path.basename(name) or name in (".", ".."):
        raise InputError(f"{index}: shard {name!r} is not a plain file name in the folder")
    if "\\" in name or "\x00" in name:
        raise InputError(f"{index}: shard {name!r} is not a plain file name in the folder")
    shard = p / name
    # A link is followed (the hub's cache links snapshot files to blobs); the name cannot leave the folder.
    if not shard.is_file():
        raise InputError(f"{index}: shard {name!r} is missing or not a regular file in {p}")
    return shard


def read_weights(p: Path, trust_pickle: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The folder's tensors and where they came from: safetensors, single or sharded; pickles on consent."""
    if (p / SAFE_SINGLE).is_file():
        return _safetensors([p / SAFE_SINGLE]), SAFE_SINGLE
    if (p / SAFE_INDEX).is_file():
        shards, weight_map = _index(p, p / SAFE_INDEX)
        sd = _safetensors(shards)
        _check_map(p / SAFE_INDEX, sd, weight_map, shards)
        return sd, f"{len(shards)} shards of {SAFE_INDEX}"
    pickles = [n for n in (PICKLE_SINGLE, PICKLE_INDEX) if (p / n).is_file()]
    if pickles and not trust_pickle:
        raise UntrustedPickleError(
            f"refusing to load {p / pickles[0]}: pickled weights, and unpickling can run code from the file",
            hint="pass --trust-pickle only if you trust its origin (loaded with weights_only=True even then), "
            "or save the model with safe_serialization=True",
        )
    if pickles:
        files = [p / PICKLE_SINGLE] if pickles[0] == PICKLE_SINGLE else _index(p, p / PICKLE_INDEX)[0]
        sd = {}
        for f in files:
            try:
                sd.update(torch.load(str(f), map_location="cpu", weights_only=True))
            except Exception as e:
                raise InputError(f"cannot read {f} with weights_only=True: {_short(e)}") from None
        return sd, ", ".join(f.name for f in files)
    raise InputError(
        f"{p} has config.json but no weights",
        hint=f"expected {SAFE_SINGLE}, or {SAFE_INDEX} and its shards",
    )


def _index(p: Path, index: Path) -> tuple[list[Path], dict[str, str]]:
    data = read_json(index, "index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index} has no weight_map object")
    shards: dict[str, Path] = {}
    for key, name in weight_map.items():
        if not isinstance(key, str):
            raise InputError(f"{index}: a weight_map key is not a string")
        if name not in shards:
            shards[name] = _plain_name(p, name, index)
    total = (data.get("metadata") or {}).get("total_size") if isinstance(data.get("metadata"), dict) else None
    if total is not None:
        on_disk = sum(s.stat().st_size for s in shards.values())
        if not isinstance(total, int) or total < 0 or total > on_disk:
            raise InputError(
                f"{index}: metadata.total_size {total!r} does not fit the shards ({on_disk} bytes on disk)"
            )
    return list(shards.values()), weight_map


def _safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for k in st.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if k in sd:
                        raise InputError(f"tensor {k!r} is stored twice (again in {f.name!r})")
                    sd[k] = st.get_tensor(k)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot read safetensors file {f}: {_short(e)}") from None
    return sd


def _check_map(
    index: Path, sd: dict[str, torch.Tensor], weight_map: dict[str, str], shards: list[Path]
) -> None:
    """Every tensor the index lists is in the shards, and the shards hold nothing it does not list."""
    missing = [k for k in weight_map if k not in sd]
    extra = [k for k in sd if k not in weight_map]
    if missing or extra:
        raise InputError(
            f"{index} does not match its shards: "
            + "; ".join(
                f"{label}: {text(', '.join(names[:_SHOWN]))}"
                for label, names in (("listed but absent", missing), ("unlisted", extra))
                if names
            )
        )
    total = sum(t.numel() * t.element_size() for t in sd.values())
    if total > sum(s.stat().st_size for s in shards):
        raise InputError(f"{index}: the shards' tensors add up to more bytes than the files hold")


def _load_into(
    p: Path, model: torch.nn.Module, sd: dict[str, torch.Tensor], non_strict: bool, notes: list[str]
) -> None:
    """Checkpoint tensors into the model; a key the file lacks is fine only when it is tied to one it has."""
    expected = model.state_dict()
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sd
        if k in expected and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if non_strict and (unexpected or mismatched):
        notes.append(f"--non-strict: ignored {len(unexpected) + len(mismatched)} checkpoint keys")
        sd = {k: v for k, v in sd.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
        unexpected = mismatched = []
    loaded_ptrs = {expected[k].data_ptr() for k in sd if k in expected}
    missing = [k for k in expected if k not in sd and expected[k].data_ptr() not in loaded_ptrs]
    problems = [
        f"{label}: {text(', '.join(names[:_SHOWN]))}"
        + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if names
    ]
    if problems:
        raise InputError(
            f"the weights of {p} do not fit the model its config.json builds: " + "; ".join(problems),
            hint="pass --non-strict to load the keys that fit" if not missing else None,
        )
    stored = sorted({str(t.dtype).removeprefix("torch.") for t in sd.values() if t.is_floating_point()})
    built = {str(t.dtype).removeprefix("torch.") for t in expected.values() if t.is_floating_point()}
    if stored and set(stored) != built:
        notes.append(f"weights stored as {', '.join(stored)}, audited in {', '.join(sorted(built))}")
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)
    tied = [k for k in expected if k not in sd]
    if tied:
        notes.append(f"{len(tied)} tied weight(s) shared with stored ones: {', '.join(tied[:_SHOWN])}")


def load_folder(p: Path, opts: LoadOptions) -> TorchModel:
    """The backend's entry: :func:`load_hf_folder` with the load options a folder takes."""
    refuse_state_options(p, opts.arch, opts.state_key, opts.strip_prefixes)
    return load_hf_folder(
        p,
        _device(opts.device),
        trust_code=opts.trust_code,
        trust_pickle=opts.trust_pickle,
        non_strict=opts.non_strict,
    )


def refuse_state_options(p: Path, arch: str | None, state_key: str | None, strip: tuple[str, ...]) -> None:
    """--arch, --state-key and --strip-prefix are for bare state_dicts; a folder says what it holds."""
    given = [f for f, v in (("--arch", arch), ("--state-key", state_key), ("--strip-prefix", strip)) if v]
    if given:
        raise InputError(
            f"{given[0]} applies to state_dict files, but {p} is a Hugging Face folder whose config.json says what to build",
            hint=f"drop {given[0]}",
        )
