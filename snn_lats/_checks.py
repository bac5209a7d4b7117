"""Argument checks for the whole library: one rule for types, one message style.

Every check takes the argument's name first and returns the normalised value. A value of the wrong type is a
``TypeError``; a value of the right type outside what is allowed is a ``ValueError``. Both messages read
``"{name} must be <what is allowed>, got {value!r}"``. Bools are never numbers; integer-like values (numpy
integers, anything with ``__index__``) are ints; NaN and ±inf are never accepted as numbers.
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import nn

_BOOLS = (bool, np.bool_)


def shown(value: Any) -> str:
    """``repr(value)`` for a message; a long or multi-line one (a module, a model) becomes its type's name."""
    text = repr(value)
    return f"a {type(value).__name__}" if len(text) > 80 or "\n" in text else text


def _error(kind: type[Exception], name: str, allowed: str, value: Any) -> Exception:
    return kind(f"{name} must be {allowed}, got {shown(value)}")


def _or_none(allowed: str, optional: bool) -> str:
    return f"{allowed} or None" if optional else allowed


def _is_int(value: Any) -> bool:
    if isinstance(value, _BOOLS):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None, below: float | None = None,
                 optional: bool = False) -> float | None:
    """A finite real number (``int``, ``float``, numpy scalars; not bool), returned as a ``float``.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones; with ``optional``,
    None is allowed (and returned).
    """
    low, low_open = (above, True) if above is not None else (minimum, False)
    high, high_open = (below, True) if below is not None else (maximum, False)
    if low is not None and high is not None:
        allowed = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    else:
        bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
        bounds += [f"{'<' if high_open else '<='} {high}"] if high is not None else []
        allowed = " ".join(["a finite number", *bounds])
    allowed = _or_none(allowed, optional)
    if value is None and optional:
        return None
    if isinstance(value, _BOOLS) or not isinstance(value, numbers.Real):
        raise _error(TypeError, name, allowed, value)
    number = float(value)
    if (not math.isfinite(number)
            or (low is not None and (number <= low if low_open else number < low))
            or (high is not None and (number >= high if high_open else number > high))):
        raise _error(ValueError, name, allowed, value)
    return number


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False) -> int | None:
    """An integer (``int``, numpy integers, anything with ``__index__``; not bool), returned as an ``int``;
    ``minimum``/``maximum`` are inclusive bounds; with ``optional``, None is allowed (and returned)."""
    if minimum is not None and maximum is not None:
        allowed = f"an int in [{minimum}, {maximum}]"
    else:
        allowed = " ".join(["an int", *([f">= {minimum}"] if minimum is not None else []),
                            *([f"<= {maximum}"] if maximum is not None else [])])
    allowed = _or_none(allowed, optional)
    if value is None and optional:
        return None
    if not _is_int(value):
        raise _error(TypeError, name, allowed, value)
    number = operator.index(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise _error(ValueError, name, allowed, value)
    return number


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a numpy bool too); anything else, 0, 1 and strings included, is a
    TypeError."""
    if not isinstance(value, _BOOLS):
        raise _error(TypeError, name, "True or False", value)
    return bool(value)


def _kind(value: Any) -> Any:
    if isinstance(value, _BOOLS):
        return bool
    return int if _is_int(value) else str if isinstance(value, str) else type(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (strings, ints or None), returned as the matching choice. A value of a kind no
    choice has (``3`` for string choices, ``2.0`` or ``True`` for int choices) is a TypeError."""
    choices = tuple(choices)
    allowed = f"one of {choices}"
    kind = _kind(value)
    for choice in choices:
        if _kind(choice) is kind and choice == value:
            return choice
    if any(_kind(choice) is kind for choice in choices):
        raise _error(ValueError, name, allowed, value)
    raise _error(TypeError, name, allowed, value)


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str, *,
               optional: bool = False) -> Any:
    """An instance of ``types`` (``what`` names them in the message, e.g. ``"a torch.optim.Optimizer"``); with
    ``optional``, None is allowed."""
    if (value is None and optional) or isinstance(value, types):
        return value
    raise _error(TypeError, name, _or_none(what, optional), value)


def check_names(name: str, value: Any, *, modules: bool = False) -> tuple[Any, ...]:
    """A list (any iterable but a string) of layer names, or of names and ``nn.Module`` objects with
    ``modules``; None is the empty tuple. A bare name or module is a TypeError that says to pass a list."""
    items = (str, nn.Module) if modules else (str,)
    allowed = "a list of layer names" + (" or modules" if modules else "")
    if value is None:
        return ()
    if isinstance(value, items):
        bare, what = (repr(value), "string") if isinstance(value, str) else ("module", "module")
        raise TypeError(f"{name} must be {allowed}, got {shown(value)} (a bare {what}): pass [{bare}]")
    try:
        entries = tuple(value) if isinstance(value, Iterable) else None
    except TypeError:  # iterable by type only (a 0-d tensor)
        entries = None
    if entries is None:
        raise _error(TypeError, name, allowed, value)
    for i, entry in enumerate(entries):
        if not isinstance(entry, items):
            raise _error(TypeError, f"{name}[{i}]", "a str or nn.Module" if modules else "a str", entry)
    return entries


def check_classes(name: str, value: Any, base: type, what: str) -> tuple[type, ...]:
    """A non-empty sequence of subclasses of ``base`` (``what`` names it in messages, e.g. ``"nn.Module"``),
    returned as a tuple; a bare class is a TypeError that says to pass a tuple."""
    allowed = f"a non-empty sequence of {what} classes"
    if isinstance(value, type):
        raise TypeError(f"{name} must be {allowed}, got {value.__name__} (a bare class): pass "
                        f"({value.__name__},)")
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _error(TypeError, name, allowed, value)
    classes = tuple(value)
    if not classes:
        raise _error(ValueError, name, allowed, value)
    for i, cls in enumerate(classes):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise _error(TypeError, f"{name}[{i}]", f"a subclass of {what}", cls)
    return classes


def differs(saved: Any, mine: Any) -> bool:
    """Whether a value loaded from a state differs from this object's own; anything that does not compare to
    a plain bool (a tensor, a numpy array) differs."""
    try:
        return bool(saved != mine)
    except Exception:
        return True
