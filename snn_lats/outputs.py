"""Which tensor of a model's output is "the output": models return tuples, lists and dicts too.

The Spike-Driven Transformer returns ``(logits, hook)``, detection heads return dicts. Everything in snn_lats
that reads a model's output (accuracy in ``measure``, OCS's trace, train.py's loss) goes through
:func:`select_output`: by default the first tensor found depth-first, or what ``output=`` names.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._checks import shown

#: None (the first tensor), an index into a tuple/list, a key of a dict, or a callable on the whole output.
OutputSelector = None | int | str | Callable[[Any], torch.Tensor]


def check_output_selector(name: str, output: object) -> OutputSelector:
    """``output`` unchanged if it is a valid selector; else a TypeError naming ``name`` and what is
    allowed."""
    if output is None or callable(output) or (isinstance(output, int | str) and not isinstance(output, bool)):
        return output
    raise TypeError(f"{name} must be None (the first tensor of the output), an int index, a str key or a "
                    f"callable that takes the output and returns a tensor; got {shown(output)}")


def first_tensor(out: object) -> torch.Tensor | None:
    """The first tensor in ``out``, depth-first through tuples, lists and dict values (in order); or None."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def select_output(out: object, output: OutputSelector = None) -> torch.Tensor:
    """The tensor ``output`` selects from a model's output ``out`` (see the module); a ValueError that says
    what the output holds when it selects no tensor."""
    output = check_output_selector("output", output)
    if output is None:
        found = first_tensor(out)
    elif callable(output):
        found = output(out)
    elif isinstance(output, int) and isinstance(out, (tuple, list)):
        found = out[output] if -len(out) <= output < len(out) else None
    elif isinstance(output, str) and isinstance(out, Mapping):
        found = out.get(output)
    else:
        found = None
    if isinstance(found, torch.Tensor):
        return found
    raise ValueError(f"the model's output {_describe(out)} has no tensor "
                     + ("at all" if output is None else f"for output={output!r}")
                     + ": pass output= (an index, a key or a callable) that picks the logits")


def _describe(out: object) -> str:
    if isinstance(out, torch.Tensor):
        return f"(a tensor of shape {tuple(out.shape)})"
    if isinstance(out, Mapping):
        return f"(a {type(out).__name__} with keys {list(out)[:8]})"
    if isinstance(out, (tuple, list)):
        return f"(a {type(out).__name__} of {[type(o).__name__ for o in out][:8]})"
    return f"({shown(out)})"
