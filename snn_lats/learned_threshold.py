"""``LearnedThresholdPruner``: LTP, learned per-layer thresholds with a differentiable L0 term (Azarian et al.
2020)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_int, check_number, check_type, differs, shown
from .base import BasePruner
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers
from .parametrizations import LearnedThreshold

NORMALIZATIONS = ("count", "macs", "none")
BAND = 4.0  # |z| < 4: the sigmoid's transition band, where σ(1 − σ) > 0.018


@dataclass(frozen=True)
class LayerThreshold:
    tau: float  # on the squared-weight scale: weights with w² ≤ τ are pruned at evaluation
    temperature: float  # T_l = T0·Var(|w|)
    sparsity: float  # of the hard mask
    soft_density: float  # mean σ((w² − τ)/T), the layer's differentiable L0 per weight
    # fraction of weights with |z| < 4; 0 means τ gets no gradient (premature termination)
    band_fraction: float
    weights: int


@dataclass
class ThresholdReport:
    layers: dict[str, LayerThreshold] = field(default_factory=dict)

    @property
    def band_fraction(self) -> float:
        total = sum(layer.weights for layer in self.layers.values())
        return sum(layer.band_fraction * layer.weights for layer in self.layers.values()) / total

    @property
    def sparsity(self) -> float:
        total = sum(layer.weights for layer in self.layers.values())
        return sum(layer.sparsity * layer.weights for layer in self.layers.values()) / total

    def to_dict(self) -> dict:
        return {"layers": {n: vars(t) for n, t in self.layers.items()}, "sparsity": self.sparsity,
                "band_fraction": self.band_fraction}

    def __str__(self) -> str:
        width = max([len(n) for n in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'tau':>10}  {'sqrt(tau)':>9}  {'T_l':>10}  "
                 "sparsity  soft_L0  in_band"]
        for n, t in self.layers.items():
            cutoff = math.sqrt(t.tau) if t.tau > 0 else 0.0
            lines.append(f"{n:<{width}}  {t.tau:10.3e}  {cutoff:9.4f}  {t.temperature:10.3e}  "
                         f"{t.sparsity:8.4f}  {t.soft_density:7.4f}  {t.band_fraction:7.4f}")
        lines.append(f"{'total':<{width}}  {'':>10}  {'':>9}  {'':>10}  {self.sparsity:8.4f}  {'':>7}  "
                     f"{self.band_fraction:7.4f}")
        return "\n".join(lines)


class LearnedThresholdPruner(BasePruner):
    """Learn one threshold τ_l per layer on the squared weights, pushed up by a differentiable L0 term.

    Training: ``W = θ·σ((θ² − τ_l)/T_l)`` with ``T_l = temperature·Var(|θ|)``. Evaluation (``model.eval()``)
    and ``squash()``: the hard mask ``W = θ·1[θ² > τ_l]``. Add :meth:`regularization` to the loss; it is what
    pushes τ up. θ's gradient skips the sigmoid's slope (LTP's straight-through rule), in the mask and in the
    L0 term, so only τ feels the L0 pressure; τ keeps its full gradient from both terms. With BatchNorm after
    a layer, L1/L2 only rescale the weights; L0 counts them, so the pressure is real.

    τ_l is stored as ``threshold · unit`` with ``unit`` = Var(|θ|) when the pruner is built: build it after
    loading pretrained weights. One learning rate then fits every layer; give it through :meth:`param_groups`.

    Args:
        model: the network (before DDP). SpikingJelly's ``layer.Conv1d/2d/3d`` / ``layer.Linear`` are
            covered through their ``nn`` base classes.
        l0_weight: λ in ``loss = task_loss + λ·L0``. Larger → sparser.
        temperature: T0 > 0. Smaller → a sharper sigmoid (closer to the hard mask, but fewer weights in the
            transition band to move τ; see :meth:`report`).
        normalize: ``"count"`` (L0 divided by the number of pruned weights: the soft density, in [0, 1]),
            ``"macs"`` (each weight counted by the MACs it costs per sample, divided by the total: the soft
            MAC density; needs one forward pass before the first :meth:`regularization`), or ``"none"`` (the
            raw count of the paper's eq. 6).
        layer_weights: optional extra per-layer factors ``{name: weight >= 0}`` (others 1), on top of
            ``normalize``.
        initial_threshold: τ at the start, in units of Var(|θ|). 0 keeps every nonzero weight.
        ignored_layers / layer_types: as for every snn_lats pruner.
    """

    def __init__(
        self,
        model: nn.Module,
        l0_weight: float = 1.0,
        temperature: float = 0.5,
        *,
        normalize: str = "count",
        layer_weights: Mapping[str, float] | None = None,
        initial_threshold: float = 0.0,
        ignored_layers: IgnoredLayers = None,
        layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ):
        self.l0_weight = check_number("l0_weight", l0_weight, minimum=0)
        self.temperature = check_number("temperature", temperature, above=0)
        self.normalize = check_choice("normalize", normalize, NORMALIZATIONS)
        initial_threshold = check_number("initial_threshold", initial_threshold)
        layer_weights = check_type("layer_weights", layer_weights, Mapping, "a dict {layer name: weight}",
                                   optional=True) or {}
        layer_weights = {name: check_number(f"layer_weights[{name!r}]", value, minimum=0)
                         for name, value in layer_weights.items()}
        super().__init__(model, ignored_layers, layer_types)
        unknown = sorted(set(layer_weights) - set(self.layers))
        if unknown:
            raise ValueError(f"layer_weights names layers that are not pruned: {unknown}")
        self.layer_weights = {name: layer_weights.get(name, 1.0) for name in self.layers}

        units = {}  # every layer's unit before the first parametrization: a refused layer changes nothing
        for name, module in self.layers.items():
            units[name] = float(module.weight.detach().abs().float().var(correction=0))
            if not units[name] > 0:
                raise ValueError(f"layer {name!r} ({type(module).__name__}) has weights of constant "
                                 "magnitude; cannot set its threshold unit (add it to ignored_layers, or "
                                 "leave its type out of layer_types)")
        self._register(lambda name, module: LearnedThreshold(self.temperature, units[name],
                                                             initial_threshold).to(module.weight.device))
        self._macs_per_weight: dict[str, int] = {}
        self._hooks = []
        if self.normalize == "macs":
            self._hooks = [module.register_forward_hook(self._record_macs(name))
                           for name, module in self.layers.items()]

    def _record_macs(self, name: str):
        def hook(module, inputs, output):
            # each weight is used once per output position of one sample: the product of a conv's spatial
            # output sizes (L, H·W or D·H·W for Conv1d/2d/3d), 1 for a linear
            spatial = len(module.kernel_size) if isinstance(module, nn.modules.conv._ConvNd) else 0
            self._macs_per_weight[name] = math.prod(output.shape[output.dim() - spatial:])
            self._hooks_done()
        return hook

    def _hooks_done(self) -> None:
        if len(self._macs_per_weight) == len(self.layers):
            for h in self._hooks:
                h.remove()
            self._hooks = []

    def thresholds(self) -> list[nn.Parameter]:
        """The learnable threshold parameters (one scalar per layer)."""
        return [p.threshold for _, _, p in self.parametrizations()]

    def param_groups(self, threshold_lr: float | None = None) -> list[dict[str, Any]]:
        """``[{"params": every other parameter}, {"params": thresholds, "weight_decay": 0,
        "lr": threshold_lr}]``.

        Pass to the optimizer in place of ``model.parameters()``; the first group takes the optimizer's
        defaults.
        """
        taus = self.thresholds()
        ids = {id(t) for t in taus}
        others = [p for p in self.model.parameters() if id(p) not in ids]
        group: dict[str, Any] = {"params": taus, "weight_decay": 0.0}
        if threshold_lr is not None:
            group["lr"] = check_number("threshold_lr", threshold_lr, above=0)
        return [{"params": others}, group]

    def extra_param_groups(self, lr: float | None = None) -> list[dict[str, Any]]:
        """The thresholds' group of :meth:`param_groups` (own LR, no weight decay), for an optimizer built
        over ``model.parameters()`` before this pruner created τ."""
        return self.param_groups(lr)[1:]

    @torch.no_grad()
    def band_fraction(self) -> float:
        """The fraction of all pruned weights in the sigmoid's transition band (0: τ no longer moves); one
        device sync, so a loop may log it every step."""
        self._check_not_squashed("band_fraction()")
        counts = [(p.logits(m.parametrizations.weight.original).abs() < BAND).sum() for _, m, p in
                  self.parametrizations()]
        total = sum(m.parametrizations.weight.original.numel() for m in self.layers.values())
        return float(torch.stack(counts).sum()) / total

    def log_dict(self) -> dict[str, float | None]:
        return {"band_fraction": self.band_fraction()}

    def _layer_factors(self) -> dict[str, float]:
        """The factor in front of each layer's Σσ, from ``normalize`` and ``layer_weights``."""
        counts = {name: module.parametrizations.weight.original.numel()
                  for name, module in self.layers.items()}
        if self.normalize == "macs":
            missing = sorted(set(self.layers) - set(self._macs_per_weight))
            if missing:
                raise RuntimeError("normalize='macs' needs one forward pass before regularization(); "
                                   f"no output seen yet for {missing[:5]}")
            total = sum(self._macs_per_weight[n] * counts[n] for n in self.layers)
            base = {n: self._macs_per_weight[n] / total for n in self.layers}
        elif self.normalize == "count":
            total = sum(counts.values())
            base = {n: 1.0 / total for n in self.layers}
        else:
            base = {n: 1.0 for n in self.layers}
        return {n: base[n] * self.layer_weights[n] for n in self.layers}

    def soft_l0(self) -> torch.Tensor:
        """The differentiable L0 term Σ_l c_l·Σ_k σ((θ² − τ_l)/T_l), normalized as chosen (no λ)."""
        self._check_not_squashed("soft_l0()")
        factors = self._layer_factors()
        terms = [factors[name] * torch.sigmoid(p.logits(module.parametrizations.weight.original)).sum()
                 for name, module, p in self.parametrizations()]
        return torch.stack(terms).sum()

    def regularization(self) -> torch.Tensor:
        """``l0_weight · soft_l0()``: add it to the task loss before ``backward()``."""
        self._check_not_squashed("regularization()")
        return self.l0_weight * self.soft_l0()

    @torch.no_grad()
    def report(self) -> ThresholdReport:
        """Per layer: τ, T_l, hard sparsity, soft density and the fraction of weights in the transition
        band."""
        self._check_not_squashed("report()")
        report = ThresholdReport()
        for name, module, p in self.parametrizations():
            theta = module.parametrizations.weight.original
            z = p.logits(theta)
            report.layers[name] = LayerThreshold(
                tau=float(p.tau), temperature=float(p.layer_temperature(theta)),
                sparsity=float(1 - p.hard_mask(theta).float().mean()),
                soft_density=float(torch.sigmoid(z).mean()),
                band_fraction=float((z.abs() < BAND).float().mean()), weights=theta.numel())
        return report

    def _step(self) -> None:
        """Count one optimizer step (τ moves through the optimizer)."""
        self.step_count += 1

    def _check_model_state(self) -> None:
        # T0 is both the pruner's setting and a buffer of every layer; the buffer is what the forward uses
        for name, _, p in self.parametrizations():
            if not math.isclose(p._temperature_value, self.temperature, rel_tol=1e-6):
                raise self._stale(f"the model's temperature for {name!r} is {p._temperature_value:.6g}, this "
                                  f"pruner's is {self.temperature:.6g}")

    def _all_zero_layers(self) -> dict[str, str]:
        entries = list(self.parametrizations())
        peaks = [m.parametrizations.weight.original.detach().square().amax().float() for _, m, _ in entries]
        taus = [p.tau.detach().float() for _, _, p in entries]
        pairs = [torch.stack(pair) for pair in zip(peaks, taus, strict=True)]
        values = torch.stack(pairs).tolist()  # one sync
        return {name: f"its largest θ² is {peak:.4g} <= τ = {tau:.4g} (hard mask)"
                for (name, _, _), (peak, tau) in zip(entries, values, strict=True) if peak <= tau}

    def squash(self) -> nn.Module:
        """Bake the hard mask ``θ·1[θ² > τ]`` into plain weights and drop the parametrizations and τ."""
        self._check_not_squashed("squash()")
        for _, _, p in self.parametrizations():
            p.train(False)
        return super().squash()

    def state_dict(self) -> dict[str, Any]:
        """The pruner's settings and step (τ, its unit and T0 are in the model's ``state_dict``)."""
        return {**self._base_state(), "l0_weight": self.l0_weight, "temperature": self.temperature,
                "normalize": self.normalize, "layer_weights": dict(self.layer_weights),
                "macs_per_weight": dict(self._macs_per_weight)}

    def _settings(self) -> dict[str, Any]:
        return {"l0_weight": self.l0_weight, "temperature": self.temperature, "normalize": self.normalize}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state saved with other settings is refused, and every entry is
        checked before the first assignment, so a refused state changes nothing."""
        self._check_base_state(state, ("l0_weight", "temperature", "normalize", "layer_weights",
                                       "macs_per_weight"))
        values = {"l0_weight": check_number("state_dict['l0_weight']", state["l0_weight"], minimum=0),
                  "temperature": check_number("state_dict['temperature']", state["temperature"], above=0),
                  "normalize": check_choice("state_dict['normalize']", state["normalize"], NORMALIZATIONS)}
        settings = state.get("settings") or {}
        for key, value in values.items():  # a state with settings: its own entries must agree with them
            if key in settings and differs(settings[key], value):
                raise ValueError(f"state_dict[{key!r}] is {value!r} but its settings say {key}="
                                 f"{shown(settings[key])}")
        weights = check_type("state_dict['layer_weights']", state["layer_weights"], Mapping,
                             "a dict {layer: weight}")
        missing = sorted(set(self.layers) - set(weights))
        if missing:
            raise ValueError(f"state_dict['layer_weights'] has no weight for layers {missing[:5]}")
        weights = {name: check_number(f"state_dict['layer_weights'][{name!r}]", weights[name], minimum=0)
                   for name in self.layers}
        macs = check_type("state_dict['macs_per_weight']", state["macs_per_weight"], Mapping,
                          "a dict {layer: MACs per weight}")
        unknown = sorted(map(repr, set(macs) - set(self.layers)))
        if unknown:
            raise ValueError(f"state_dict['macs_per_weight'] names layers that are not pruned: {unknown}")
        macs = {name: check_int(f"state_dict['macs_per_weight'][{name!r}]", value, minimum=1)
                for name, value in macs.items()}
        self._load_base_state(state)
        self.l0_weight, self.temperature = values["l0_weight"], values["temperature"]
        self.normalize = values["normalize"]
        self.layer_weights = weights
        self._macs_per_weight.update(macs)
        self._hooks_done()
