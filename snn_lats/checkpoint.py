"""Reading model weights from checkpoints: prepared (parametrized) or plain, strictly, with clear errors."""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._checks import check_bool, check_type, shown
from .io import atomic_save
from .parametrizations import parametrization_for_state, pruning_parametrization

_PARAM = ".parametrizations.weight."


def squash_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn the keys of a pruner-prepared model into the plain keys of an untouched one, computing W.

    Each ``X.parametrizations.weight.original`` (θ) and its ``X.parametrizations.weight.0.*`` entries become
    ``X.weight``, baked by the parametrization those entries belong to (``SoftThreshold.bake``:
    sign(θ)·relu(|θ| − d), or θ·mask once frozen; ``BinaryMask.bake``: θ·mask; ``LearnedThreshold.bake``:
    the hard mask θ·1[θ² > τ]). Plain state_dicts pass through unchanged. Works offline, without building
    the model.
    """
    check_type("state_dict", state_dict, Mapping, "a state_dict (a mapping of names to tensors)")
    for key, value in state_dict.items():  # other values (a module's extra state) pass through as they are
        check_type("state_dict keys", key, str, "strings")
        if _PARAM in key:
            check_type(f"state_dict[{key!r}]", value, torch.Tensor, "a torch.Tensor")
    out: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, torch.Tensor]] = {}  # layer prefix -> its parametrization's entries
    for key in state_dict:
        if key.endswith(_PARAM + "original"):
            entries[key[: -len(_PARAM + "original")]] = {}
    for key, value in state_dict.items():
        prefix = key.split(_PARAM)[0] if _PARAM in key else None
        if prefix is None or prefix not in entries:
            out[key] = value
            continue
        suffix = key[len(prefix + _PARAM):]
        if suffix == "original":
            continue
        if not suffix.startswith("0.") or "." in suffix[2:]:
            raise ValueError(f"cannot squash {key!r}: only snn_lats's own parametrization is understood")
        entries[prefix][suffix[2:]] = value
    for prefix, state in entries.items():
        try:
            cls = parametrization_for_state(set(state))
        except ValueError as exc:
            raise ValueError(f"cannot squash {prefix}.weight: {exc}") from None
        theta = state_dict[prefix + _PARAM + "original"]
        for name, value in state.items():
            key = prefix + _PARAM + "0." + name
            if name == "mask" and value.shape != theta.shape:
                raise ValueError(f"cannot squash {prefix}.weight: {key} has shape {tuple(value.shape)}, the "
                                 f"weight {tuple(theta.shape)}")
            if name != "mask" and (value.numel() != 1 or not bool(torch.isfinite(value).all())):
                raise ValueError(f"cannot squash {prefix}.weight: {key} must be one finite number, got "
                                 f"{shown(value)}")
        out[prefix + ".weight"] = cls.bake(theta, state)
    return out


def model_state_from_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The model's state_dict inside a checkpoint dict (key ``model``, ``state_dict`` or ``model_state``), or
    the object itself if it is already a state_dict."""
    if isinstance(checkpoint, Mapping):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(checkpoint.get(key), Mapping):
                return dict(checkpoint[key])
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return dict(checkpoint)
        if any(isinstance(v, torch.Tensor) for v in checkpoint.values()):  # a state_dict with a bad entry
            key, value = next((k, v) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
            raise ValueError("checkpoint holds no model state_dict (looked for keys 'model', 'state_dict', "
                             f"'model_state'; as a state_dict, its entry {key!r} is {shown(value)}, not a "
                             "tensor)")
    raise ValueError("checkpoint holds no model state_dict "
                     "(looked for keys 'model', 'state_dict', 'model_state')")


def _unpacked_size(path: str | os.PathLike) -> int | None:
    """The bytes a zip checkpoint's entries hold once read (as its directory declares them), or None for a
    file that is no zip (the legacy format, or not a checkpoint at all)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with a clear error for a missing, truncated or corrupt file.

    A zip whose entries unpack to far more than the file's size (``torch.save`` stores them uncompressed) is
    refused before ``torch.load`` allocates for it: a zip bomb never reaches memory."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    size, unpacked = os.path.getsize(path), _unpacked_size(path)
    if unpacked is not None and unpacked > 2 * size + 2**20:
        raise ValueError(f"checkpoint {os.fspath(path)!r} unpacks to {unpacked:,} bytes from a file of "
                         f"{size:,}: torch.save stores its entries uncompressed, so this is no checkpoint of "
                         "it (a zip bomb?); refused without reading it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc) or "GLOBAL" not in str(exc):  # no object: not a pickle
            reason = next((line.strip() for line in str(exc).splitlines() if "Unsupported" in line), exc)
            raise ValueError(f"checkpoint {os.fspath(path)!r} is corrupt or truncated: {reason}") from None
        # torch's message suggests weights_only=False; a file that needs it is refused, never run
        why = next((line.strip() for line in str(exc).splitlines()
                    if "GLOBAL" in line or "Unsupported" in line),
                   "it is not tensors and plain containers")
        raise ValueError(f"checkpoint {os.fspath(path)!r} holds objects that are not allowed in a checkpoint "
                         f"(only tensors and plain containers load): {why}") from None
    except Exception as exc:  # torch raises several types for truncated zips
        raise ValueError(f"checkpoint {os.fspath(path)!r} is corrupt or truncated: {exc}") from exc


def load_plain_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a (squashed or prepared) state_dict strictly into an unprepared model; name every mismatching
    key. Every entry is checked before the first is copied (:func:`check_state_fits`)."""
    state = squash_state_dict(state_dict)
    check_state_fits(model, state)
    model.load_state_dict(state, strict=True)


def check_state_fits(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Raise a ValueError, naming the entries, unless ``model.load_state_dict(state, strict=True)`` would
    copy every entry as it is: the same keys and shapes, no meta or sparse tensor, the same kind of number as
    the model's (an integer tensor is not converted into a float weight), no NaN or infinity in a parameter.
    ``load_state_dict`` itself checks as it copies, so a late failure would leave the model half loaded."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state), key=str)
    unexpected = sorted(set(state) - set(own), key=str)
    tensors = sorted(k for k in set(own) & set(state)
                     if isinstance(own[k], torch.Tensor) and isinstance(state[k], torch.Tensor))
    mismatched = [k for k in tensors if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in mismatched]
        raise ValueError("checkpoint does not match the model: " + _mismatch(missing, unexpected, shapes))
    for key in tensors:  # other values are a module's extra state: its own to load
        if (problem := _entry_problem(state[key], own[key])) is not None:
            raise ValueError(f"checkpoint entry {key!r} {problem}")
    # parameters finite; buffers without NaN (an infinite buffer can be meant: an attention mask's -inf)
    params = {name for name, _ in model.named_parameters()}
    bad = [k for k in tensors if state[k].is_floating_point() or state[k].is_complex()]
    bad = [k for k in bad if not bool((torch.isfinite if k in params else _no_nan)(state[k]).all())]
    if bad:
        raise ValueError(f"checkpoint has NaN or infinite weights in {bad[:5]}"
                         f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''} (a run that diverged?)")


def _no_nan(tensor: torch.Tensor) -> torch.Tensor:
    return ~torch.isnan(tensor)


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    return "complex" if tensor.is_complex() else "floating-point" if tensor.is_floating_point() else "integer"


def _entry_problem(value: torch.Tensor, own: torch.Tensor) -> str | None:
    """Why a checkpoint tensor cannot be copied into the model's tensor ``own`` as it is, or None: ``copy_``
    would fail part-way through a load (a meta or sparse tensor), or convert it silently (an integer, bool or
    complex tensor into a floating-point one, or back)."""
    if value.is_meta:
        return "is on the meta device: it holds no values"
    if value.layout != torch.strided:
        return f"is a {value.layout} tensor; convert it with .to_dense()"
    if _kind(value) != _kind(own):
        return (f"is {_kind(value)} ({value.dtype}), the model's is {_kind(own)} ({own.dtype}); a checkpoint "
                "of another kind of number is not converted silently")
    return None


def _key(key: Any) -> str:
    """A state_dict key as a message shows it: a plain dotted name as it is, anything else (an empty name, a
    non-string) as its repr."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w.]+", key) else repr(key)


def _mismatch(missing: list[str], unexpected: list[str], shapes: list[str] = ()) -> str:
    """'missing keys (2): a, b; unexpected keys (1): c; ...', each list cut after 8 entries."""
    parts = []
    labelled = (("missing keys", [_key(k) for k in missing]),
                ("unexpected keys", [_key(k) for k in unexpected]), ("shape mismatches", shapes))
    for label, items in labelled:
        if items:
            shown = ", ".join(items[:8]) + (f", ... and {len(items) - 8} more" if len(items) > 8 else "")
            parts.append(f"{label} ({len(items)}): {shown}")
    return "; ".join(parts)


def _prepared_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if pruning_parametrization(m) is not None}


@torch.no_grad()
def load_dense(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a dense state_dict (plain keys) into a pruner-prepared model, through ``right_inverse``.

    Each pruned layer's dense weight W becomes θ = sign(W)·(|W| + d) for the current threshold d, so the
    model computes exactly what the dense checkpoint computed (up to float rounding when d > 0). Everything
    else loads as usual. Keys follow the unprepared model: SpikingJelly's model zoo layout for SEW ResNets,
    torchvision's for ResNet-50. Missing or unexpected keys are listed in the error; nothing is changed then.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    prepared = _prepared_layers(model)
    if not prepared:
        raise ValueError("load_dense: the model is not prepared by an snn_lats pruner; "
                         "use model.load_state_dict for a plain model")
    state = model_state_from_checkpoint(state_dict)  # a plain state_dict comes back as a copy
    for key, value in state.items():  # a nested state_dict ({"model": {...}}) comes back unchecked
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"load_dense: state_dict[{key!r}] must be a torch.Tensor, got {shown(value)}")
    prepared_key = next((k for k in state if isinstance(k, str) and _PARAM in k), None)
    if prepared_key is not None:
        raise ValueError("load_dense expects a dense state_dict with plain keys; this one is from a prepared "
                         f"model (key {prepared_key!r}; load it with model.load_state_dict)")
    expected = set(export_dense(model, clone=False))
    missing, unexpected = sorted(expected - set(state), key=str), sorted(set(state) - expected, key=str)
    if missing or unexpected:
        raise ValueError("load_dense: state_dict does not match the model: " + _mismatch(missing, unexpected))
    own = export_dense(model, clone=False)
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in sorted(own)
              if state[k].shape != own[k].shape]
    if shapes:  # every check comes before the first assignment: a failed load changes nothing
        raise ValueError("load_dense: state_dict does not match the model: " + _mismatch([], [], shapes))
    for key in sorted(own):
        if (problem := _entry_problem(state[key], own[key])) is not None:
            raise ValueError(f"load_dense: state_dict[{key!r}] {problem}")
    pruned = {f"{name}.weight" if name else "weight" for name in prepared}
    nonfinite = [k for k in sorted(pruned) if not bool(torch.isfinite(state[k]).all())]
    if nonfinite:
        raise ValueError(f"load_dense: state_dict has NaN or infinite weights in {nonfinite[:5]}; the "
                         "weights of the pruned layers must be finite")
    for name, module in prepared.items():
        p = pruning_parametrization(module)
        if not hasattr(p, "right_inverse"):
            raise ValueError(f"load_dense: layer {name!r} is prepared with {type(p).__name__}, which has "
                             "no right_inverse; load_dense serves SoftThresholdPruner's layers (load dense "
                             "weights into the plain model before building the pruner)")
    for name, module in prepared.items():
        key = f"{name}.weight" if name else "weight"
        module.weight = state.pop(key).to(module.parametrizations.weight.original)  # through right_inverse
    # The rest (biases, BN, ...) was checked key by key above; non-strict only because the prepared layers'
    # parametrization entries are not in a dense state_dict.
    model.load_state_dict(state, strict=False)


def export_dense(model: nn.Module, clone: bool = True) -> dict[str, torch.Tensor]:
    """The model's weights with plain keys and pruned weights squashed (exact zeros); the model is unchanged.

    Loads strictly into the untouched architecture. Works on prepared and on plain models.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_bool("clone", clone)
    state = squash_state_dict(model.state_dict())
    return {k: v.detach().clone() for k, v in state.items()} if clone else state


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (:func:`snn_lats.io.atomic_save`): a crash leaves the previous file or the
    new one, never a truncated one."""
    atomic_save(obj, path)
