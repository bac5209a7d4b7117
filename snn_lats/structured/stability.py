"""OCSPruner's sub-network stability indicator Ψ (reference B.6).

``J_avg(t)`` is the Jaccard similarity of the retained channel sets at epochs t and t − 2, averaged over
groups (0 until three structures exist, and at epochs before monitoring starts); ``Ψ(t)`` is the running mean
of ``J_avg`` over the last 3 epochs (fewer at the very start, as the reference's ``running_average``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .._checks import check_int, check_number, check_type

Structure = Sequence[Sequence[int]]  # retained root-channel indices, one list per group


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """``|a ∩ b| / |a ∪ b|``; 1.0 for two empty sets."""
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def mean_jaccard(current: Structure, previous: Structure) -> float:
    """Jaccard similarity of matching groups, averaged over groups."""
    if len(current) != len(previous):
        raise ValueError(f"structures have {len(current)} and {len(previous)} groups; they must match")
    if not current:
        return 1.0
    return sum(jaccard(a, b) for a, b in zip(current, previous, strict=True)) / len(current)


class StabilityTracker:
    """Feed one retained structure per epoch (``None`` before monitoring); read Ψ.

    ``lag`` = 2 compares t with t − 2 (the reference keeps a 3-structure history); ``window`` = 3 is the
    running mean's length.
    """

    def __init__(self, lag: int = 2, window: int = 3):
        self.lag = check_int("lag", lag, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.structures: list[list[list[int]]] = []  # the last lag + 1 structures recorded
        self.jaccard: list[float] = []  # J_avg per epoch
        self.psi: list[float] = []  # Ψ per epoch

    def update(self, retained: Structure | None) -> float:
        """Record one epoch and return Ψ for it."""
        raw = 0.0
        if retained is not None:
            self.structures.append([sorted(int(i) for i in g) for g in retained])
            self.structures = self.structures[-(self.lag + 1):]
            if len(self.structures) == self.lag + 1:
                raw = mean_jaccard(self.structures[-1], self.structures[0])
        self.jaccard.append(raw)
        recent = self.jaccard[-self.window:]
        self.psi.append(sum(recent) / len(recent))
        return self.psi[-1]

    @property
    def value(self) -> float:
        return self.psi[-1] if self.psi else 0.0

    def state_dict(self) -> dict:
        return {"lag": self.lag, "window": self.window,
                "structures": [list(map(list, s)) for s in self.structures],
                "jaccard": list(self.jaccard), "psi": list(self.psi)}

    def load_state_dict(self, state: Mapping, name: str = "state",
                        sizes: Sequence[int] | None = None) -> None:
        """Restore :meth:`state_dict`; every entry is checked first (``name`` is the state's name in
        messages), so a refused state changes nothing. ``sizes``: the channels of each group, which every
        saved structure must fit."""
        check_type(name, state, Mapping, "a dict from StabilityTracker.state_dict()")
        missing = sorted({"lag", "window", "structures", "jaccard", "psi"} - set(state))
        if missing:
            raise ValueError(f"{name} is missing keys {missing}")
        lag = check_int(f"{name}['lag']", state["lag"], minimum=1)
        window = check_int(f"{name}['window']", state["window"], minimum=1)
        if (lag, window) != (self.lag, self.window):
            raise ValueError(f"{name} has lag/window {lag}/{window}, this tracker {self.lag}/{self.window}")
        structures = [[[check_int(f"{name}['structures'][{i}][{j}][{k}]", c, minimum=0)
                        for k, c in enumerate(_items(f"{name}['structures'][{i}][{j}]", g))]
                       for j, g in enumerate(_items(f"{name}['structures'][{i}]", s))]
                      for i, s in enumerate(_items(f"{name}['structures']", state["structures"]))]
        for i, structure in enumerate(structures if sizes is not None else ()):
            if len(structure) != len(sizes):
                raise ValueError(f"{name}['structures'][{i}] has {len(structure)} groups, the model "
                                 f"{len(sizes)}")
            for j, (group, size) in enumerate(zip(structure, sizes, strict=True)):
                if any(c >= size for c in group):
                    raise ValueError(f"{name}['structures'][{i}][{j}] lists channels beyond the group's "
                                     f"{size}: {sorted(c for c in group if c >= size)[:5]}")
        series = {key: [check_number(f"{name}[{key!r}][{i}]", v, minimum=0, maximum=1)
                        for i, v in enumerate(_items(f"{name}[{key!r}]", state[key]))]
                  for key in ("jaccard", "psi")}
        self.structures, self.jaccard, self.psi = structures, series["jaccard"], series["psi"]


def _items(name: str, value: object) -> list:
    """A saved list (or tuple) entry of a state, checked."""
    return list(check_type(name, value, (list, tuple), "a list"))


def regularization_should_start(psi: Sequence[float], epoch: int, monitor_start_epoch: int,
                                min_gain: float = 1e-4) -> bool:
    """The automatic t_sl-start rule (B.6, ImageNet code): epoch t > 3 with Ψ(t) − Ψ(t − 2) ≤ ``min_gain``.

    ``psi`` ends with Ψ(t), one entry per epoch. Also requires t ≥ monitor_start_epoch + 2, the first epoch
    whose Ψ holds a real Jaccard term, so that a late monitoring start cannot fire on the leading zeros (with
    the scripts' monitor start of 2 this changes nothing).
    """
    if epoch <= 3 or epoch < monitor_start_epoch + 2 or len(psi) < 3:
        return False
    return psi[-1] - psi[-3] <= min_gain
