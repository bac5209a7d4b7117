"""OCSPruner's sub-network stability indicator Ψ (reference B.6).

``J_avg(t)`` is the Jaccard similarity of the retained channel sets at epochs t and t − 2, averaged over
groups (0 until three structures exist, and at epochs before monitoring starts); ``Ψ(t)`` is the running mean
of ``J_avg`` over the last 3 epochs (fewer at the very start, as the reference's ``running_average``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .._checks import check_int

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

    def load_state_dict(self, state: Mapping) -> None:
        if (state["lag"], state["window"]) != (self.lag, self.window):
            raise ValueError(f"stability state has lag/window {state['lag']}/{state['window']}, "
                             f"this tracker {self.lag}/{self.window}")
        self.structures = [[list(map(int, g)) for g in s] for s in state["structures"]]
        self.jaccard = [float(v) for v in state["jaccard"]]
        self.psi = [float(v) for v in state["psi"]]


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
