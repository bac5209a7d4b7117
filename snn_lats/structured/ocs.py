"""OCSPruner: one-cycle structured pruning with stability-driven sub-network search (Ghimire et al., WACV
2026).

Per epoch (``epoch_start``): score every channel group, binary-search the global cut that meets the FLOPs
target, record the retained channels, update the stability indicator Ψ and the regularisation strength λ.
After every optimizer step (``step``): shrink the channels currently selected for pruning,
``W[c] ← (1 − λ·η)·W[c]``. Once Ψ reaches the threshold (or at the cap epoch) the training loop calls
``prune()``, which removes the channels with torch-pruning and returns the structure spec. See
docs/structured.md.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_int, check_number, check_type, differs, shown
from ..outputs import OutputSelector, check_output_selector
from ..pruner import Pruner
from ..spiking import spikingjelly_logs_summarised
from .atomic import StructureSnapshot
from .flops import ChannelMacModel, ForwardFn, layer_geometry, reset_spiking_state
from .groups import ChannelGroup, build_channel_groups
from .importance import channels_to_keep, flops_cost_softmax, group_saliency, protected_channels
from .regularizers import ChannelRegularizer, build_regularizer
from .spec import structure_spec
from .stability import StabilityTracker, regularization_should_start

_STATE_VERSION = 1
_STATE_KEYS = frozenset({"version", "groups", "target_flops_reduction", "epoch", "selection",
                         "candidate_flops", "dense_flops", "stability", "reg_lambda", "reg_started_at",
                         "regularizing", "should_prune", "pruned", "prune_epoch", "pruned_flops", "spec",
                         "history"})


def _to_device(obj: object, device: torch.device) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


@contextlib.contextmanager
def summarised_warnings(during: str) -> Iterator[None]:
    """Warnings raised inside (torch-pruning warns once per traced node: "Maximum recursive depth reached!"
    hundreds of times on a transformer) re-issued once per distinct first line, with their count; and
    SpikingJelly's log lines held back likewise (snn_lats.spiking.spikingjelly_logs_summarised)."""
    with spikingjelly_logs_summarised(during), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    counts: dict[str, tuple[int, warnings.WarningMessage]] = {}
    for w in caught:
        text = str(w.message).splitlines()[0][:200]
        n, first = counts.get(text, (0, w))
        counts[text] = (n + 1, first)
    for text, (n, first) in counts.items():
        warnings.warn(first.category(f"{text} (x{n} during {during})" if n > 1 else text), stacklevel=4)


def _shapes(obj: object) -> object:
    """The tensor shapes in a (nested) forward output, for comparing outputs before and after pruning."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, (tuple, list)):
        return tuple(_shapes(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _shapes(v) for k, v in obj.items()}
    return type(obj).__name__


class OCSPruner(Pruner):
    """One-cycle structured pruning (OCSPruner) for CNNs and SpikingJelly SNNs.

    Args:
        model: the (unwrapped, not DDP) model; pruned in place by ``prune()``.
        example_inputs: a batch the model's forward accepts (multi-step SNNs: ``[B, C, H, W]`` or
            ``[T, B, C, H, W]``). FLOPs are counted on it (``count_macs``); the reference used one sample.
        target_flops_reduction: fraction of the dense MACs to remove, in (0, 1).
        ignored_layers: names or modules never pruned along their outputs (containers ignore everything
            inside). The classifier (the last conv/linear layer the forward runs) is always ignored unless
            ``ignore_classifier=False``.
        layer_prune_limit: r_max of the per-group floor, at most ⌊C·r_max·(1 − e^{−kC})⌋ channels of a group
            go.
        monitor_start_epoch: first epoch at which channels are scored and Ψ tracked.
        reg_start_epoch: first regularised epoch; None = automatic (first t > 3 with Ψ(t) − Ψ(t−2) ≤ 1e-4).
        reg_init, reg_delta, reg_interval: λ starts at ``reg_init`` and grows by ``reg_delta`` at the start of
            every regularised epoch divisible by ``reg_interval`` (the reference's order: the increment comes
            before the epoch's first step, so a regularised epoch 10 with interval 2 runs at 2e-4).
        stability_threshold: prune once Ψ ≥ this.
        prune_epoch_cap: prune at this epoch at the latest (None: no cap).
        regularizer: ``"shrink"`` (the reference: decoupled shrink in ``step()``) or ``"group_lasso"`` (true
            gradient of λ·Σ_c‖θ_c‖₂ over the to-prune channels, added by ``regularize()`` after backward).
        optimizer: its ``param_groups[0]["lr"]`` is η in the shrink; needed for ``regularizer="shrink"``.
        forward_fn: ``forward_fn(model, example_inputs)`` if ``model(example_inputs)`` is not how to call it.
        trace_forward_fn, trace_inputs: override the single-step forward/input used to trace SNNs (by default
            one time step of ``example_inputs`` in single-step mode, or, if that forward fails, as for models
            that repeat a static image over T, the model's own multi-step forward at T=1). Models on
            SpikingJelly's clock_driven API (fixed multi-step neurons) are traced at T=1.
        flops_tolerance: the binary search stops within this of the target (reference: 5e-4).
        cost_temperature: κ (MACs saved per channel, on ``example_inputs``) is divided by this before the
            softmax (reference: 1e6).
        prune_limit_rate: k of the per-group floor (reference: 1.0).
        importance_p: 2 (GroupNormV2, the reference default) or 1.
        round_to: keep the number of channels removed from each group a multiple of this (None: off).
        ignore_classifier: see ``ignored_layers``.

    Groups that feed grouped convs lose the same positions in every conv group (``ChannelGroup.tie``). Groups
    that cannot be pruned at all, because removing one of their channels (one unit) breaks the forward, its
    output shapes or the channel MAC model (attention head splits, reshapes torch-pruning cannot follow), are
    found at construction by trying it, listed in ``skipped_groups`` with the reason, and a warning says so.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: object,
        target_flops_reduction: float = 0.5,
        *,
        ignored_layers: Iterable[str | nn.Module] | None = None,
        layer_prune_limit: float = 0.75,
        monitor_start_epoch: int = 2,
        reg_start_epoch: int | None = None,
        reg_init: float = 1e-4,
        reg_delta: float = 1e-4,
        reg_interval: int = 2,
        stability_threshold: float = 0.999,
        prune_epoch_cap: int | None = None,
        regularizer: str | ChannelRegularizer = "shrink",
        optimizer: torch.optim.Optimizer | None = None,
        forward_fn: ForwardFn | None = None,
        trace_forward_fn: ForwardFn | None = None,
        trace_inputs: object = None,
        flops_tolerance: float = 5e-4,
        cost_temperature: float = 1e6,
        prune_limit_rate: float = 1.0,
        importance_p: int = 2,
        round_to: int | None = None,
        ignore_classifier: bool = True,
        output: OutputSelector = None,
    ):
        check_type("model", model, nn.Module, "a torch.nn.Module")
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            raise TypeError("model must be the unwrapped model (model.module), not the DDP/DataParallel "
                            f"wrapper, got a {type(model).__name__}")
        self.target_flops_reduction = check_number("target_flops_reduction", target_flops_reduction,
                                                   above=0, below=1)
        self.layer_prune_limit = check_number("layer_prune_limit", layer_prune_limit, above=0, below=1)
        self.monitor_start_epoch = check_int("monitor_start_epoch", monitor_start_epoch, minimum=0)
        self.reg_start_epoch = check_int("reg_start_epoch", reg_start_epoch, minimum=0, optional=True)
        self.reg_init = check_number("reg_init", reg_init, minimum=0)
        self.reg_delta = check_number("reg_delta", reg_delta, minimum=0)
        self.reg_interval = check_int("reg_interval", reg_interval, minimum=1)
        self.stability_threshold = check_number("stability_threshold", stability_threshold, above=0,
                                                maximum=1)
        self.prune_epoch_cap = check_int("prune_epoch_cap", prune_epoch_cap, minimum=0, optional=True)
        if self.prune_epoch_cap is not None and self.prune_epoch_cap < self.monitor_start_epoch:
            raise ValueError(f"prune_epoch_cap must be >= monitor_start_epoch={self.monitor_start_epoch} "
                             f"(pruning needs a scored selection), got {prune_epoch_cap!r}")
        regularizer = build_regularizer(regularizer)
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer", optional=True)
        self.flops_tolerance = check_number("flops_tolerance", flops_tolerance, above=0, below=1)
        self.cost_temperature = check_number("cost_temperature", cost_temperature, above=0)
        self.prune_limit_rate = check_number("prune_limit_rate", prune_limit_rate, above=0)
        self.importance_p = check_choice("importance_p", importance_p, (1, 2))
        self.round_to = check_int("round_to", round_to, minimum=1, optional=True)
        ignore_classifier = check_bool("ignore_classifier", ignore_classifier)
        self.regularizer = regularizer
        self.optimizer = optimizer

        self.model = model
        device = next((p.device for p in model.parameters()), None)
        self.example_inputs = example_inputs if device is None else _to_device(example_inputs, device)
        example_inputs = self.example_inputs
        self.forward_fn = forward_fn
        output = check_output_selector("output", output)
        with summarised_warnings("OCSPruner's construction"):
            self._build(model, example_inputs, ignored_layers, ignore_classifier, forward_fn,
                        trace_forward_fn, trace_inputs, output)
        self._refuse_unreachable_target(type(model).__name__)
        if self.skipped_groups:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.skipped_groups.items())[:6])
            more = f"; ... and {len(self.skipped_groups) - 6} more" if len(self.skipped_groups) > 6 else ""
            warnings.warn(f"OCSPruner: {len(self.skipped_groups)} channel group(s) of {type(model).__name__} "
                          f"are left unpruned (pruner.skipped_groups): {shown}{more}", stacklevel=2)

        self.tracker = StabilityTracker()
        self._epoch: int | None = None
        self._masks: list[torch.Tensor] | None = None  # current to-prune root channels per group
        self._candidate_flops = self.dense_flops
        self._reg_lambda = self.reg_init
        self._reg_started_at: int | None = None
        self._regularizing = False
        self._should_prune = False
        self.pruned = False
        self.prune_epoch: int | None = None
        self.spec: dict | None = None
        self.pruned_flops: int | None = None
        self.history: list[dict] = []
        self._shrink_targets: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        # root channels removed, per group of the dense model
        self._pruned_selection: list[list[int]] | None = None

    def _build(self, model, example_inputs, ignored_layers, ignore_classifier, forward_fn, trace_forward_fn,
               trace_inputs, output) -> None:
        """The channel groups, the MAC model, the floors and the FLOPs-cost weights (changes no weight)."""
        info = build_channel_groups(model, example_inputs, ignored_layers=ignored_layers,
                                    ignore_classifier=ignore_classifier, forward_fn=forward_fn,
                                    trace_forward_fn=trace_forward_fn, trace_inputs=trace_inputs,
                                    output=output)
        self.graph = info.graph
        self.groups: list[ChannelGroup] = info.groups
        self.classifier = info.classifier
        self.ignored_layers = info.ignored
        self._geometry = info.geometry
        self._output_shapes = _shapes(info.output)
        # {group root: why it is never pruned}: grouped convs that cannot keep equal groups, and groups whose
        # removal breaks the forward or the MAC model (attention head splits torch-pruning cannot see).
        self.skipped_groups: dict[str, str] = dict(info.skipped)
        self.mac_model = ChannelMacModel(info.geometry, [g.couplings() for g in self.groups])
        self.dense_flops = self.mac_model.macs([None] * len(self.groups))
        self.keep_floor = self._floors()
        self._drop_unprunable_groups()
        # κ_g: MACs saved per removed channel when a group keeps only its last channel (B.4, cost.py).
        kappa = []
        for i, g in enumerate(self.groups):
            removed = [None] * len(self.groups)
            removed[i] = (torch.arange(g.units) < g.units - 1).repeat(g.tie)
            kappa.append((self.dense_flops - self.mac_model.macs(removed)) / max(g.size - 1, 1))
        self.flops_cost = flops_cost_softmax(kappa, self.cost_temperature)  # π_g

    # ------------------------------------------------------------------------------------------- selection
    def scores(self) -> list[torch.Tensor]:
        """ŝ_c = s_c · (1 − π_g) for every group (float64, CPU), before the per-group floor."""
        return [group_saliency(g, self.importance_p) * (1.0 - float(self.flops_cost[i]))
                for i, g in enumerate(self.groups)]

    def unit_scores(self) -> list[torch.Tensor]:
        """``scores()`` per removable unit: the channel itself, or for a group tied by grouped convs the mean
        over the channels at one position of every block (as torch-pruning scores grouped convs)."""
        return [s.view(g.tie, g.units).mean(0) for s, g in zip(self.scores(), self.groups, strict=True)]

    def _floors(self) -> list[int]:
        """Units each group keeps at least: the channel floor ⌈C − ⌊C·r_max·(1 − e^{−kC})⌋⌉ in units."""
        return [-(-channels_to_keep(g.size, self.layer_prune_limit, self.prune_limit_rate) // g.tie)
                for g in self.groups]

    def max_flops_reduction(self) -> float:
        """The largest MAC reduction the prunable groups allow: every unit above its group's floor removed
        (the floor kept where removing saves least). Scores play no part: it is what any selection can
        reach."""
        if not self.groups:
            return 0.0
        masks = []
        couplings = self.mac_model.couplings
        for g, floor, (_, _, counts) in zip(self.groups, self.keep_floor, couplings, strict=True):
            per_root = counts.sum(0) if counts.numel() else torch.zeros(g.size, dtype=torch.float64)
            per_unit = per_root.view(g.tie, g.units).sum(0)
            removed = torch.ones(g.units, dtype=torch.bool)
            removed[torch.argsort(per_unit, stable=True)[:floor]] = False
            masks.append(removed)
        return 1.0 - self.mac_model.macs(self._channel_masks(masks)) / self.dense_flops

    def _skipped_summary(self) -> str:
        """The groups left unpruned, grouped by reason, each reason quoted (for one-line errors)."""
        reasons: dict[str, list[str]] = {}
        for key, reason in self.skipped_groups.items():
            reasons.setdefault(reason, []).append(key)
        parts = [f"{', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}: {reason[:240]}"
                 for reason, keys in list(reasons.items())[:3]]
        more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        return f"{len(self.skipped_groups)} group(s) are left unpruned ({'; '.join(parts)}{more})"

    def _refuse_unreachable_target(self, model_name: str) -> None:
        """A ValueError, before anything is changed, when the target cannot be met: never a 0 % "success"."""
        reachable = self.max_flops_reduction()
        skipped = f"; {self._skipped_summary()}" if self.skipped_groups else ""
        if len(self.groups) == 1 and reachable >= self.target_flops_reduction - self.flops_tolerance:
            raise ValueError(f"OCSPruner: {model_name} has one prunable channel group "
                             f"({self.groups[0].key}), whose channels OCS cannot rank: the FLOPs-cost weight "
                             f"of a single group is π = 1, so every score ŝ = s·(1 − π) is 0{skipped}; "
                             f"{self._ignored_remedy()}")
        if reachable >= self.target_flops_reduction - self.flops_tolerance:
            return
        why = [f"{len(self.groups)} channel group(s) are prunable, each keeping at least its floor "
               f"(layer_prune_limit={self.layer_prune_limit})" if self.groups
               else "no channel group is prunable"]
        if self.ignored_layers:
            shown_ignored = ", ".join(self.ignored_layers[:4])
            why.append(f"{len(self.ignored_layers)} layer(s) are ignored ({shown_ignored}"
                       f"{' ...' if len(self.ignored_layers) > 4 else ''})")
        raise ValueError(f"OCSPruner: target_flops_reduction {self.target_flops_reduction} is out of reach "
                         f"for {model_name}: at most {reachable:.4f} of its {self.dense_flops:,} MACs can be "
                         f"removed, because {'; '.join(why)}{skipped}; lower target_flops_reduction, or "
                         f"{self._ignored_remedy()}")

    def _ignored_remedy(self) -> str:
        ignored = f" (now {self.ignored_layers})" if self.ignored_layers else ""
        return f"ignore fewer layers with ignored_layers{ignored}"

    @staticmethod
    def _channel_mask(group: ChannelGroup, unit_mask: torch.Tensor) -> torch.Tensor:
        return unit_mask.repeat(group.tie)  # channel p + b·units belongs to unit p

    def select(self) -> tuple[list[torch.Tensor], int]:
        """Binary-search the global score cut meeting the target (B.5): per-group to-prune masks and their
        MACs.

        Candidates are evaluated with the analytic channel MAC model (exactly what ``count_macs`` gives on the
        pruned model; ``prune()`` re-measures). The search stops within ``flops_tolerance`` of the target; of
        all candidates evaluated, the one closest to the target is returned.
        """
        scores = self.unit_scores()
        protected = [protected_channels(s, k) for s, k in zip(scores, self.keep_floor, strict=True)]
        expand = self._channel_masks
        free = (torch.cat([s[~p] for s, p in zip(scores, protected, strict=True)]) if scores
                else torch.zeros(0))
        values = torch.sort(free).values
        none = [torch.zeros(g.size, dtype=torch.bool) for g in self.groups]
        best, best_macs, best_gap = none, self.dense_flops, self.target_flops_reduction
        left, right = 0, len(values) - 1
        while left <= right:
            mid = (left + right) // 2
            masks = [(s <= values[mid]) & ~p for s, p in zip(scores, protected, strict=True)]
            if self.round_to:
                masks = [self._round(m, s, g) for m, s, g in zip(masks, scores, self.groups, strict=True)]
            masks = expand(masks)
            macs = self.mac_model.macs(masks)
            achieved = 1.0 - macs / self.dense_flops
            gap = abs(self.target_flops_reduction - achieved)
            if gap < best_gap:
                best, best_macs, best_gap = masks, macs, gap
            if gap <= self.flops_tolerance:
                break
            if achieved <= self.target_flops_reduction:
                left = mid + 1
            else:
                right = mid - 1
        short = 1.0 - best_macs / self.dense_flops < self.target_flops_reduction
        if len(values) and best_gap > self.flops_tolerance and short:
            reachable = 1.0 - self.mac_model.macs(expand([~p for p in protected])) / self.dense_flops
            if reachable < self.target_flops_reduction - self.flops_tolerance:
                warnings.warn(f"OCSPruner: target_flops_reduction {self.target_flops_reduction} is out of "
                              f"reach: the per-group floor (layer_prune_limit={self.layer_prune_limit}) and "
                              f"ignored layers allow at most {reachable:.4f}", stacklevel=3)
        return best, best_macs

    def _channel_masks(self, unit_masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self._channel_mask(g, m) for g, m in zip(self.groups, unit_masks, strict=True)]

    def _round(self, mask: torch.Tensor, scores: torch.Tensor, group: ChannelGroup) -> torch.Tensor:
        step = self.round_to // math.gcd(self.round_to, group.tie)  # units per round_to channels
        n = int(mask.sum()) // step * step
        if n == int(mask.sum()):
            return mask
        chosen = mask.nonzero().flatten()
        keep = chosen[torch.argsort(scores[chosen])[:n]]  # the lowest-scoring n
        out = torch.zeros_like(mask)
        out[keep] = True
        return out

    def _set_selection(self, masks: list[torch.Tensor], macs: int) -> None:
        self._masks = masks
        self._candidate_flops = macs
        self._build_shrink_targets()

    def _retained(self) -> list[list[int]]:
        return [(~m).nonzero().flatten().tolist() for m in self._masks]

    @property
    def selection(self) -> dict[str, list[int]]:
        """``{group root layer: root channel indices selected for pruning}`` (empty before monitoring, and on
        a pruner restored after pruning: its groups are the thin model's; ``state_dict()["selection"]`` keeps
        the removed channels per group of the dense model)."""
        if self._masks is None:
            return {}
        return {g.key: m.nonzero().flatten().tolist() for g, m in zip(self.groups, self._masks, strict=True)}

    # ------------------------------------------------------------------------------------------------- epochs
    def epoch_start(self, epoch: int) -> None:
        """Score, select, update Ψ and λ for ``epoch`` (call once at the start of every epoch, in order)."""
        if self.pruned:
            return
        epoch = check_int("epoch", epoch, minimum=0)
        if self._epoch is not None and epoch <= self._epoch:
            raise ValueError(f"epoch_start({epoch}) after epoch_start({self._epoch}): epochs must increase "
                             "(on resume, load_state_dict first and continue with the next epoch)")
        self._epoch = epoch
        monitoring = epoch >= self.monitor_start_epoch
        if monitoring:
            self._set_selection(*self.select())
        psi = self.tracker.update(self._retained() if monitoring else None)

        if self._reg_started_at is None and monitoring:
            if self.reg_start_epoch is None:
                if regularization_should_start(self.tracker.psi, epoch, self.monitor_start_epoch):
                    self._reg_started_at = epoch
            elif epoch >= self.reg_start_epoch:
                self._reg_started_at = epoch
        self._regularizing = self._reg_started_at is not None
        if self._regularizing and epoch % self.reg_interval == 0:
            self._reg_lambda += self.reg_delta

        cap_hit = self.prune_epoch_cap is not None and epoch >= self.prune_epoch_cap
        self._should_prune = monitoring and (psi >= self.stability_threshold or cap_hit)
        self.history.append(self.summary())

    def summary(self) -> dict:
        """What to log this epoch: Ψ, J_avg, λ in use, candidate MACs and reduction, flags."""
        return {
            "epoch": self._epoch, "stability": self.stability,
            "jaccard": self.tracker.jaccard[-1] if self.tracker.jaccard else 0.0,
            "regularization_strength": self.regularization_strength,
            "candidate_flops": self.candidate_flops,
            "candidate_flops_reduction": self.candidate_flops_reduction,
            "dense_flops": self.dense_flops, "should_prune": self.should_prune, "pruned": self.pruned,
        }

    @property
    def stability(self) -> float:
        """Ψ of the latest epoch (0.0 before any)."""
        return self.tracker.value

    @property
    def regularization_strength(self) -> float:
        """λ applied during the current epoch (0.0 while not regularising or after pruning)."""
        return self._reg_lambda if self._regularizing and not self.pruned else 0.0

    @property
    def regularization_start_epoch(self) -> int | None:
        return self._reg_started_at

    @property
    def candidate_flops(self) -> int:
        """MACs of the currently selected sub-network (after pruning: of the pruned model, measured)."""
        return self.pruned_flops if self.pruned else self._candidate_flops

    @property
    def candidate_flops_reduction(self) -> float:
        return 1.0 - self.candidate_flops / self.dense_flops

    @property
    def achieved_flops_reduction(self) -> float | None:
        """Measured reduction of the pruned model (None before ``prune()``)."""
        return None if self.pruned_flops is None else 1.0 - self.pruned_flops / self.dense_flops

    @property
    def should_prune(self) -> bool:
        """True once an epoch's Ψ reached the threshold or the cap epoch came: prune after that epoch."""
        return self._should_prune and not self.pruned

    # -------------------------------------------------------------------------------------------- regulariser
    def _members_with_selection(self):
        """(group index, member, selected member idxs, their root channels) over the to-prune channels."""
        for gi, (group, mask) in enumerate(zip(self.groups, self._masks or (), strict=False)):
            if not bool(mask.any()):
                continue
            for member in group.members:
                if member.param is None:
                    continue
                chosen = mask[member.root]
                if bool(chosen.any()):
                    yield gi, member, member.idxs[chosen], member.root[chosen]

    def _build_shrink_targets(self) -> None:
        merged: dict[tuple[int, int], tuple[torch.Tensor, int, list[torch.Tensor]]] = {}
        for _, member, idxs, _ in self._members_with_selection():
            param = member.param
            key = (id(param), member.dim)
            merged.setdefault(key, (param, member.dim, []))[2].append(idxs)
        self._shrink_targets = [(p, dim, torch.unique(torch.cat(parts)).to(p.device))
                                for p, dim, parts in merged.values()]

    def shrink_targets(self) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        """``(parameter, dim, indices)`` of every weight slice and BN γ of the to-prune channels."""
        return self._shrink_targets

    def step(self, lr: float | None = None) -> None:
        """After every optimizer step: the regularizer's step (``shrink``: ``W[c] ← (1 − λ·η)·W[c]`` for the
        to-prune channels). η is ``lr`` or the optimizer's ``param_groups[0]["lr"]``. (Channels are removed
        by :meth:`epoch_end` or :meth:`prune`, not here.)"""
        if self.pruned or not self._regularizing:
            return
        self.regularizer.step(self, self._reg_lambda, lr)

    def penalty(self) -> torch.Tensor:
        """``λ·Σ_{c to prune} ‖θ_c‖₂`` (θ_c: every weight slice and BN γ of channel c), differentiable.

        With ``regularizer="shrink"`` the reference only logs this (computed without gradient).
        """
        total = torch.zeros((), device=next(self.model.parameters()).device)
        for mask, sq, _ in self.selected_sq_norms(detach=False):
            total = total + sq[mask].clamp_min(1e-24).sqrt().sum().to(total.device)
        return total * self._reg_lambda

    def selected_sq_norms(self, detach: bool):
        """Per group with a selection: (mask, ‖θ_c‖² per root channel, [(member, idxs, roots)])."""
        by_group: dict[int, list] = {}
        for gi, member, idxs, roots in self._members_with_selection():
            by_group.setdefault(gi, []).append((member, idxs, roots))
        for gi, parts in by_group.items():
            first = parts[0][0].param
            sq = torch.zeros(self.groups[gi].size, device=first.device, dtype=first.dtype)
            for member, idxs, roots in parts:
                w = member.param.detach() if detach else member.param
                rows = w.index_select(member.dim, idxs.to(w.device)).movedim(member.dim, 0)
                rows = rows.reshape(len(idxs), -1)
                sq = sq.index_add(0, roots.to(sq.device), rows.pow(2).sum(1).to(sq.device))
            yield self._masks[gi].to(sq.device), sq, parts

    def regularize(self) -> None:
        """After ``loss.backward()``, before ``optimizer.step()``: the regularizer's gradient
        (``group_lasso``: ``grad[θ_c] += λ·θ_c/‖θ_c‖₂`` for every to-prune channel c)."""
        if self.pruned or not self._regularizing:
            return
        self.regularizer.regularize(self, self._reg_lambda)

    def epoch_end(self, epoch: int) -> bool:
        """Remove the channels (:meth:`prune`) when this epoch ended the search; True when it did, so the
        loop builds a new optimizer over the model's new parameters and re-wraps DDP."""
        if not self.should_prune:
            return False
        self.prune()
        return True

    @property
    def structure_change_due(self) -> bool:
        return self.should_prune

    def log_dict(self) -> dict[str, float | None]:
        """This epoch's Ψ, λ and candidate MACs while searching; nothing once the channels are gone."""
        if self.pruned:
            return {}
        return {"stability": self.stability, "reg_strength": self.regularization_strength,
                "candidate_macs": self.candidate_flops}

    # ------------------------------------------------------------------------------------------------ pruning
    def prune(self, selection: Mapping[str, Sequence[int]] | None = None, *, reselect: bool = True) -> dict:
        """Remove the selected channels in place and return the structure spec.

        By default the channels are re-selected on the current weights (the reference re-runs the search after
        the last regularised epoch); ``reselect=False`` uses the last ``epoch_start`` selection, and
        ``selection`` (``{group root layer: root channel indices}``) prunes exactly those channels. Afterwards
        ``epoch_start``/``step``/``regularize`` do nothing: rebuild the optimizer (its parameters are new
        tensors) and re-wrap DDP. Calling it again returns the same spec.

        Atomic: if torch-pruning fails, or the pruned model's forward of ``example_inputs`` fails, changes its
        output shapes or does not have exactly the predicted MACs, the model (the same Parameter objects,
        values, widths and neuron state), the optimizer and the pruner are left as they were, and a
        ``RuntimeError`` says what failed.
        """
        if self.pruned:
            return self.spec
        if selection is not None:
            masks = self._masks_from(selection)
            macs = self.mac_model.macs(masks)
        elif reselect or self._masks is None:
            masks, macs = self.select()
        else:
            masks, macs = self._masks, self._candidate_flops
        if not any(bool(m.any()) for m in masks):
            why = ""
            if len(self.groups) == 1 and not bool(self.scores()[0].any()):
                why = (f": the only prunable group ({self.groups[0].key}) scores every channel 0, since the "
                       "FLOPs-cost weight of a single group is π = 1 and ŝ = s·(1 − π)")
            raise RuntimeError(f"OCSPruner.prune: the selection removes no channel (a 0 % cut){why}; the "
                               "model and the pruner are unchanged")
        with summarised_warnings("OCSPruner.prune"):
            failure = self._remove(masks, macs)
        if failure is not None:
            raise RuntimeError(f"OCSPruner.prune: {failure}; the model and the pruner are unchanged")
        self._masks, self._candidate_flops = masks, macs
        self._pruned_selection = [m.nonzero().flatten().tolist() for m in masks]
        self.pruned_flops = macs
        self.pruned = True
        self.prune_epoch = self._epoch
        self._regularizing = False
        self._should_prune = False
        self._shrink_targets = []
        self.spec = structure_spec(self.model)
        return self.spec

    def _remove(self, masks: Sequence[torch.Tensor | None], macs: int, *, check: bool = True,
                keep: bool = True) -> str | None:
        """Remove ``masks`` in place and check the result: the forward of ``example_inputs`` runs, gives
        outputs of the dense shapes and exactly ``macs`` MACs. On any failure (and always with ``keep=False``)
        restore the model and the graph exactly (same Parameter objects and values, so an optimizer over them
        is untouched); return what failed, or None."""
        snapshot = StructureSnapshot(self.model, self.graph)
        try:
            failure = self._remove_and_check(masks, macs, check)
        except BaseException:
            snapshot.restore()
            raise
        if failure is not None or not keep:
            snapshot.restore()
        return failure

    def _remove_and_check(self, masks: Sequence[torch.Tensor | None], macs: int, check: bool) -> str | None:
        reset_spiking_state(self.model)
        for group, mask in zip(self.groups, masks, strict=False):
            if mask is None or not bool(mask.any()):
                continue
            idxs = mask.nonzero().flatten().tolist()
            step = f"removing {len(idxs)} of {group.size} channels of group {group.key!r}"
            try:
                tp_group = self.graph.get_pruning_group(group.root, group.handler, idxs)
                if check and not self.graph.check_pruning_group(tp_group):
                    raise RuntimeError("it would empty a layer")
                tp_group.prune()
            except Exception as exc:
                return f"{step} failed in torch-pruning: {type(exc).__name__}: {exc}"
        device = next(self.model.parameters()).device
        try:
            geometry, _, output = layer_geometry(self.model, _to_device(self.example_inputs, device),
                                                 self.forward_fn)
        except Exception as exc:
            return f"the pruned model's forward failed: {exc}"
        measured = sum(g.macs for g in geometry.values())
        if _shapes(output) != self._output_shapes:
            return (f"the pruned model's output has shapes {_shapes(output)}, the dense model's "
                    f"{self._output_shapes}")
        if measured != macs:
            return (f"the pruned model has {measured} MACs but the channel model predicted {macs}: a "
                    "coupled layer is not pruned consistently")
        return None

    def _probe(self, indices: Sequence[int]) -> str | None:
        """Why removing the last unit of every group in ``indices`` breaks the model (None if it does not);
        the model is restored either way."""
        masks: list[torch.Tensor | None] = [None] * len(self.groups)
        for i in indices:
            g = self.groups[i]
            masks[i] = self._channel_mask(g, torch.arange(g.units) == g.units - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one unit of a group with more units never empties a layer: skip torch-pruning's (slow) check
            return self._remove(masks, self.mac_model.macs(masks), check=False, keep=False)

    def _drop_unprunable_groups(self) -> None:
        """Leave out the groups whose removal breaks the model (found by trying one unit of every group at
        once, then bisecting the failures), and rebuild the MAC model and floors without them."""
        bad: dict[int, str] = {}

        def visit(indices: list[int]) -> None:
            if not indices:
                return
            failure = self._probe(indices)
            if failure is None:
                return
            if len(indices) == 1:
                bad[indices[0]] = failure
                return
            half = len(indices) // 2
            visit(indices[:half])
            visit(indices[half:])

        visit([i for i, (g, k) in enumerate(zip(self.groups, self.keep_floor, strict=True)) if k < g.units])
        if not bad:
            return
        for i, why in sorted(bad.items()):
            self.skipped_groups[self.groups[i].key] = f"removing one of its channels breaks the model ({why})"
        self.groups = [g for i, g in enumerate(self.groups) if i not in bad]
        self.mac_model = ChannelMacModel(self._geometry, [g.couplings() for g in self.groups])
        self.keep_floor = self._floors()

    def _masks_from(self, selection: Mapping[str, Sequence[int]]) -> list[torch.Tensor]:
        keys = {g.key: i for i, g in enumerate(self.groups)}
        skipped = [k for k in selection if k in self.skipped_groups]
        if skipped:
            raise ValueError(f"selection: groups {skipped} are left unpruned: "
                             + "; ".join(f"{k}: {self.skipped_groups[k]}" for k in skipped))
        unknown = [k for k in selection if k not in keys]
        if unknown:
            raise ValueError(f"selection: {unknown} are not group roots; groups are {list(keys)}")
        masks = [torch.zeros(g.size, dtype=torch.bool) for g in self.groups]
        for key, idxs in selection.items():
            group = self.groups[keys[key]]
            idxs = torch.as_tensor(list(idxs), dtype=torch.long)
            if len(idxs) and (idxs.min() < 0 or idxs.max() >= group.size):
                raise ValueError(f"selection[{key!r}]: indices must be in [0, {group.size}), "
                                 f"got {idxs.tolist()}")
            masks[keys[key]][idxs] = True
            blocks = masks[keys[key]].view(group.tie, group.units)
            if group.tie > 1 and not bool((blocks == blocks[:1]).all()):
                raise ValueError(f"selection[{key!r}]: the group feeds grouped convs, so it must lose the "
                                 f"same positions in each of its {group.tie} blocks of {group.units} "
                                 "channels")
            if bool(masks[keys[key]].all()):
                raise ValueError(f"selection[{key!r}] removes all {group.size} channels of the group")
        return masks

    # ---------------------------------------------------------------------------------------------- state
    def _check_state(self, state: Mapping) -> None:
        """Raise, naming the entry, unless ``state`` is an OCSPruner state this pruner can take."""
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise ValueError("OCSPruner.load_state_dict: state_dict must be an OCSPruner state (a dict with "
                             f"version {_STATE_VERSION}), got {shown(state)}")
        missing = sorted(_STATE_KEYS - set(state))
        if missing:
            raise ValueError(f"OCSPruner.load_state_dict: state_dict is missing keys {missing}")

        def item(key: str) -> str:
            return f"state_dict[{key!r}]"

        pruned = check_bool(item("pruned"), state["pruned"])
        for key in ("regularizing", "should_prune"):
            check_bool(item(key), state[key])
        check_number(item("target_flops_reduction"), state["target_flops_reduction"], above=0, below=1)
        check_number(item("reg_lambda"), state["reg_lambda"], minimum=0)
        for key, minimum, optional in (("epoch", 0, True), ("reg_started_at", 0, True),
                                       ("prune_epoch", 0, True), ("pruned_flops", 0, True),
                                       ("dense_flops", 1, False)):
            check_int(item(key), state[key], minimum=minimum, optional=optional)
        check_type(item("spec"), state["spec"], Mapping, "a structure spec (a dict)", optional=True)
        history = check_type(item("history"), state["history"], (list, tuple), "a list")
        for i, entry in enumerate(history):
            check_type(f"state_dict['history'][{i}]", entry, Mapping, "a dict")
        if pruned:
            if structure_spec(self.model) != state["spec"]:
                raise ValueError("OCSPruner.load_state_dict: the state is from a pruned run but the model "
                                 "does not have its structure; call "
                                 "snn_lats.structured.apply_structure(model, state['spec']) first")
            sizes = None  # the removed channels are indices into the dense model's groups
        else:
            mine = [[g.key, g.size] for g in self.groups]
            groups = check_type(item("groups"), state["groups"], (list, tuple), "a list of [layer, channels]")
            theirs = [list(g) if isinstance(g, (list, tuple)) else g for g in groups]
            if differs(theirs, mine):
                diff = next(((a, b) for a, b in zip(mine, theirs, strict=False) if differs(b, a)),
                            (len(mine), len(theirs)))
                raise ValueError(f"OCSPruner.load_state_dict: channel groups differ from the saved run "
                                 f"(first difference: this model {diff[0]}, saved {shown(diff[1])})")
            sizes = [g.size for g in self.groups]
        if not pruned and state["dense_flops"] != self.dense_flops:  # the same groups: the same dense model
            raise ValueError(f"OCSPruner.load_state_dict: state_dict['dense_flops'] is "
                             f"{state['dense_flops']}, this model's dense MACs on example_inputs are "
                             f"{self.dense_flops} (build the pruner with the saved run's example_inputs)")
        check_int(item("candidate_flops"), state["candidate_flops"], minimum=0, maximum=state["dense_flops"])
        # the tracker compares the structures of this model's groups (after pruning: of the thin model's)
        StabilityTracker(self.tracker.lag, self.tracker.window).load_state_dict(
            state["stability"], item("stability"), None if pruned else sizes)
        selection = state["selection"]
        if selection is None:
            if pruned:
                raise ValueError("OCSPruner.load_state_dict: state_dict['selection'] is None in a pruned "
                                 "state; it must list the removed channels of every group")
            return
        selection = check_type(item("selection"), selection, (list, tuple), "a list of channel lists")
        if sizes is not None and len(selection) != len(sizes):
            raise ValueError(f"OCSPruner.load_state_dict: state_dict['selection'] has {len(selection)} "
                             f"groups, this model {len(sizes)}")
        for i, idxs in enumerate(selection):
            name = f"state_dict['selection'][{i}]"
            idxs = check_type(name, idxs, (list, tuple), "a list of channel indices")
            for j, c in enumerate(idxs):
                check_int(f"{name}[{j}]", c, minimum=0, maximum=None if sizes is None else sizes[i] - 1)
            if sizes is not None and len(set(map(int, idxs))) >= sizes[i]:
                raise ValueError(f"OCSPruner.load_state_dict: {name} selects all {sizes[i]} channels of "
                                 f"group {self.groups[i].key!r}")

    def state_dict(self) -> dict:
        """Plain containers (survive ``torch.load(weights_only=True)``): enough to resume exactly."""
        return {
            "version": _STATE_VERSION,
            "groups": [[g.key, g.size] for g in self.groups] if not self.pruned else None,
            "target_flops_reduction": self.target_flops_reduction,
            "epoch": self._epoch,
            "selection": self._pruned_selection if self.pruned else (
                [m.nonzero().flatten().tolist() for m in self._masks] if self._masks is not None else None),
            "candidate_flops": int(self._candidate_flops),
            "dense_flops": int(self.dense_flops),
            "stability": self.tracker.state_dict(),
            "reg_lambda": float(self._reg_lambda),
            "reg_started_at": self._reg_started_at,
            "regularizing": self._regularizing,
            "should_prune": self._should_prune,
            "pruned": self.pruned,
            "prune_epoch": self.prune_epoch,
            "pruned_flops": self.pruned_flops,
            "spec": self.spec,
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore ``state_dict()``. After pruning, the model must already have the pruned structure
        (``apply_structure(model, state["spec"])`` before building this pruner or loading weights). Every
        entry is checked before the first assignment: a refused state changes nothing."""
        self._check_state(state)
        self.tracker.load_state_dict(state["stability"], "state_dict['stability']",
                                     None if state["pruned"] else [g.size for g in self.groups])
        self.target_flops_reduction = float(state["target_flops_reduction"])
        self._epoch = None if state["epoch"] is None else int(state["epoch"])
        self.dense_flops = int(state["dense_flops"])
        self._candidate_flops = int(state["candidate_flops"])
        self._reg_lambda = float(state["reg_lambda"])
        self._reg_started_at = None if state["reg_started_at"] is None else int(state["reg_started_at"])
        self._regularizing = bool(state["regularizing"])
        self._should_prune = bool(state["should_prune"])
        self.pruned = bool(state["pruned"])
        self.prune_epoch = None if state["prune_epoch"] is None else int(state["prune_epoch"])
        self.pruned_flops = None if state["pruned_flops"] is None else int(state["pruned_flops"])
        self.spec = state["spec"]
        self.history = [dict(h) for h in state["history"]]
        self._masks = None
        self._shrink_targets = []
        self._pruned_selection = [list(map(int, g)) for g in state["selection"]] if self.pruned else None
        if state["selection"] is not None and not self.pruned:
            masks = [torch.zeros(g.size, dtype=torch.bool) for g in self.groups]
            for m, idxs in zip(masks, state["selection"], strict=False):
                m[torch.as_tensor(idxs, dtype=torch.long)] = True
            self._set_selection(masks, self._candidate_flops)
