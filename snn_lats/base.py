"""What every weight pruner here shares: layer discovery, parametrization, squash and state checks."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from ._checks import check_bool, check_int, check_names, check_type, differs, shown
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from .parametrizations import latent_weight, pruning_parametrization
from .pruner import Pruner
from .sparsity import SparsityReport, layers_sparsity


class Attachment:
    """What :meth:`BasePruner.attach` returns: ``remove()`` detaches the pruner from the optimizer."""

    def __init__(self, pruner: BasePruner, optimizer: torch.optim.Optimizer):
        self.pruner, self.optimizer = pruner, optimizer
        self._handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: pruner._step_from_hook())

    def remove(self) -> None:
        self._handle.remove()
        if self.pruner._attachment is self:
            self.pruner._attachment = None

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _weight_problem(module: nn.Module) -> str | None:
    """Why ``module.weight`` cannot be parametrized by a pruner here, or None."""
    if parametrize.is_parametrized(module, "weight"):
        if pruning_parametrization(module) is not None:
            return "is already prepared by an snn_lats pruner; squash it first"
        kinds = ", ".join(type(p).__name__ for p in module.parametrizations.weight)
        return (f"has its weight parametrized already ({kinds}); remove that first with "
                "torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight'), or add the layer to "
                "ignored_layers")
    if isinstance(module._parameters.get("weight"), nn.Parameter):
        return None
    hooks = list(module._forward_pre_hooks.values())
    if any(isinstance(h, prune.BasePruningMethod) for h in hooks):
        return ("is pruned with torch.nn.utils.prune (its weight is weight_orig * weight_mask); make that "
                "permanent first with torch.nn.utils.prune.remove(layer, 'weight'), or add the layer to "
                "ignored_layers")
    if any(type(h).__name__ == "WeightNorm" for h in hooks):  # torch.nn.utils.weight_norm (deprecated)
        return ("has torch.nn.utils.weight_norm applied (its weight is computed from weight_g and weight_v); "
                "remove it first with torch.nn.utils.remove_weight_norm(layer), or add the layer to "
                "ignored_layers")
    return (f"has a weight that is a {type(getattr(module, 'weight', None)).__name__}, not an nn.Parameter "
            "of the layer (computed by a hook?); add the layer to ignored_layers")


def check_layers(model: nn.Module, layers: dict[str, nn.Module]) -> None:
    """Refuse, naming the layer, what a pruner cannot parametrize soundly; called before the first
    parametrization, so a refused model is left as it was.

    A layer's weight must be its own ``nn.Parameter``: not parametrized already (by an snn_lats pruner or
    another one, such as ``parametrizations.weight_norm``), not computed by ``torch.nn.utils.prune`` or the
    old ``weight_norm``, not empty, not shared with another module (tied weights: each use would be
    thresholded through its own layer, and ``squash`` would bake the shrink once per use), and finite.
    """
    for name, module in layers.items():
        kind = parametrize.type_before_parametrizations(module).__name__
        problem = _weight_problem(module)
        if problem is not None:
            raise ValueError(f"layer {name!r} ({kind}) {problem}")
        if module.weight.numel() == 0:
            raise ValueError(f"layer {name!r} ({kind}) has no weights (shape "
                             f"{tuple(module.weight.shape)}): nothing to prune; add it to ignored_layers")
    uses: dict[int, list[str]] = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        uses.setdefault(id(param), []).append(key)
    for name, module in layers.items():
        shared = uses.get(id(module.weight), [])
        if len(shared) > 1:
            raise ValueError(f"layer {name!r}: its weight is one Parameter shared by {sorted(shared)} (tied "
                             "weights); a pruner thresholds each layer's weight on its own, so it would "
                             "prune them differently and squash() would bake the shrink once per use. Untie "
                             "them, or add every layer that uses it to ignored_layers")
    weights = {n: m.weight for n, m in layers.items() if not m.weight.is_meta}
    if weights:
        finite = torch.stack([torch.isfinite(w.detach()).all().cpu() for w in weights.values()]).tolist()
        bad = [n for n, ok in zip(weights, finite, strict=True) if not ok]
        if bad:
            raise ValueError(f"layer(s) {bad[:5]} have NaN or infinite weights; a pruner ranks and "
                             "thresholds weights by magnitude, which NaN/inf make meaningless: load finite "
                             "weights first (or add the layers to ignored_layers)")


class BasePruner(Pruner):
    """Prepares ``model`` by registering one parametrization per prunable layer's ``weight``.

    Order of use (as ``torch.ao.pruning``): build the pruner, then move to the device / wrap in DDP; the
    optimizer may be built before or after, since the weight ``Parameter`` objects are kept. Call ``step()``
    after ``optimizer.step()`` and before ``lr_scheduler.step()``, or let :meth:`attach` do it.

    Every ``all_zero_check_every`` steps (and at the first) ``step()`` checks whether a pruned layer's
    effective weights have become all zero, or its latent weights NaN or infinite (a diverged run), and warns
    once per layer: two reductions per layer and two device syncs, about a hundredth of a forward pass at the
    default of 100 (0 turns the check off).
    """

    all_zero_check_every: int = 100

    def __init__(
        self,
        model: nn.Module,
        ignored_layers: IgnoredLayers = None,
        layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    ):
        self.model = model
        self.layers = find_prunable_layers(model, layer_types, ignored_layers)
        if not self.layers:
            names = ", ".join(getattr(t, "__name__", repr(t)) for t in layer_types)
            raise ValueError(f"model has no prunable layer: no layer of layer_types ({names}) is left after "
                             "ignored_layers")
        check_layers(model, self.layers)  # before any parametrization: a refused model is left untouched
        self.step_count = 0
        self.squashed = False
        self._attachment: Attachment | None = None
        self._from_hook = False
        self._all_zero: set[str] = set()  # layers already warned about
        self._nonfinite: set[str] = set()

    def step(self) -> None:
        """Count one optimizer step and move the pruning on. Call after ``optimizer.step()``, before the LR
        scheduler (or :meth:`attach` the pruner to the optimizer instead)."""
        self._check_not_squashed("step()")
        if self._attachment is not None and not self._from_hook:
            raise RuntimeError("step() called on a pruner attached to an optimizer, which steps it already; "
                               "drop the pruner.step() call (or remove the attachment)")
        self._check_model_state()  # before anything moves: a refused step leaves the pruner as it was
        self._step()
        every = self.all_zero_check_every
        if every and (self.step_count == 1 or self.step_count % every == 0):
            self._warn_all_zero(stacklevel=3)  # the warning points at the caller of step()

    def _step(self) -> None:
        raise NotImplementedError

    def _check_model_state(self) -> None:
        """Raise if the model's pruning buffers disagree with this pruner's state (a stale model load)."""

    def _stale(self, detail: str) -> RuntimeError:
        return RuntimeError(
            f"step() refused: {detail}. The model's state_dict was loaded without this pruner's state: "
            "load it too (pruner.load_state_dict(checkpoint['pruner']), saved from pruner.state_dict()), in "
            "either order, before stepping; stepping now would restart the pruning from this pruner's own "
            "state")

    def _all_zero_layers(self) -> dict[str, str]:
        """``{layer: why}`` for the pruned layers whose effective weights are all zero now."""
        return {}

    def check_all_zero(self) -> list[str]:
        """The pruned layers whose effective weights are all zero now; warns once per layer. ``step()`` calls
        it every ``all_zero_check_every`` steps."""
        self._check_not_squashed("check_all_zero()")
        return self._warn_all_zero(stacklevel=3)

    def _warn_all_zero(self, stacklevel: int) -> list[str]:
        with torch.no_grad():
            found = self._all_zero_layers()
            self._warn_nonfinite(stacklevel + 1)
        for name, why in found.items():
            if name not in self._all_zero:
                self._all_zero.add(name)
                own_class = parametrize.type_before_parametrizations(self.model).__name__
                layer = f"layer {name!r}" if name else f"the model itself ({own_class})"
                warnings.warn(
                    f"snn_lats: {layer} is entirely pruned (all its weights are zero) at step "
                    f"{self.step_count}: {why}. The network now trains without it and may fall to chance; "
                    "lower the threshold (snn_lats.suggest_threshold), scale it per layer "
                    "(snn_lats.relative_weight_scale) or add the layer to ignored_layers",
                    stacklevel=stacklevel)
        return list(found)

    def _warn_nonfinite(self, stacklevel: int) -> None:
        weights = [w for w in self.weights() if not w.is_meta]
        if len(weights) < len(self.layers):
            return
        finite = torch.stack([torch.isfinite(w).all() for w in weights]).tolist()  # one sync
        for name, ok in zip(self.layers, finite, strict=True):
            if not ok and name not in self._nonfinite:
                self._nonfinite.add(name)
                warnings.warn(f"snn_lats: layer {name!r} has NaN or infinite weights at step "
                              f"{self.step_count}: the training diverged (lower the learning rate, or clip "
                              "the gradients); its pruning is meaningless from here on",
                              stacklevel=stacklevel)

    def attach(self, optimizer: torch.optim.Optimizer) -> Attachment:
        """Step this pruner after every step ``optimizer`` really takes, from ``register_step_post_hook``.

        Replaces the ``pruner.step()`` call: right after ``optimizer.step()`` and before the LR scheduler, in
        plain loops, trainer classes and GradScaler loops alike (a step GradScaler skips for inf/nan gradients
        never calls ``optimizer.step()``, so it does not step the pruner either). Returns a handle whose
        ``remove()`` detaches. Attaching twice, or calling ``step()`` by hand while attached, is an error.
        """
        self._check_not_squashed("attach()")
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
        if self._attachment is not None:
            raise RuntimeError("pruner is already attached to an optimizer; call remove() on the handle "
                               "attach() returned before attaching again")
        self._check_holds_weights("optimizer", optimizer)
        self._prepare_attach(optimizer)
        self._attachment = Attachment(self, optimizer)
        return self._attachment

    def _check_holds_weights(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Raise unless ``optimizer`` holds every pruned layer's weight (before or after preparation: the
        latent θ is the layer's original ``Parameter``)."""
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, m in self.layers.items() if id(latent_weight(m)) not in held]
        if missing:
            raise ValueError(f"{name} does not hold the pruned weights of {len(missing)} layer(s), e.g. "
                             f"{missing[:3]}; build it from model.parameters() (or pruner.weights())")

    def _prepare_attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Subclass checks and settings for :meth:`attach` (raise before anything is changed)."""

    def _step_from_hook(self) -> None:
        self._from_hook = True
        try:
            self.step()
        finally:
            self._from_hook = False

    def _register(self, make: Callable[[str, nn.Module], nn.Module]) -> None:
        for name, module in self.layers.items():
            parametrize.register_parametrization(module, "weight", make(name, module))

    def parametrizations(self) -> Iterator[tuple[str, nn.Module, nn.Module]]:
        """``(name, module, parametrization)`` for every pruned layer."""
        self._check_not_squashed("parametrizations()")
        for name, module in self.layers.items():
            yield name, module, pruning_parametrization(module)

    def weights(self) -> list[nn.Parameter]:
        """The latent parameters θ the optimizer updates (``parametrizations.weight.original``)."""
        self._check_not_squashed("weights()")
        return [module.parametrizations.weight.original for module in self.layers.values()]

    def sparsity_report(self) -> SparsityReport:
        """Per-layer and global sparsity of exactly this pruner's layers (also once squashed)."""
        return layers_sparsity(self.layers)

    def _check_not_squashed(self, what: str) -> None:
        if self.squashed:
            raise RuntimeError(f"{what} called after squash(): the pruner no longer controls the model")

    @torch.no_grad()
    def squash(self) -> nn.Module:
        """Bake the current pruned weights into plain parameters (exact zeros) and drop the parametrizations.

        Any other parametrization chained on the same weight is baked in too.

        The ``Parameter`` objects are kept, so the optimizer stays valid for dense fine-tuning. The model's
        ``state_dict`` then has the plain keys of an untouched model and loads into one strictly.
        """
        self._check_not_squashed("squash()")
        for module in self.layers.values():
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self.squashed = True
        if self._attachment is not None:  # nothing left to step
            self._attachment.remove()
        return self.model

    def _settings(self) -> dict[str, Any]:
        """What the pruner was built with that a state it loads must have been saved with (subclasses)."""
        return {}

    def _base_state(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "step": self.step_count, "squashed": self.squashed,
                "layers": list(self.layers), "settings": self._settings()}

    def _load_base_state(self, state: dict[str, Any]) -> None:
        """Check ``state`` (:meth:`_check_base_state`), then restore the step count."""
        self._check_base_state(state)
        self.step_count = int(state["step"])

    def _check_base_state(self, state: dict[str, Any], keys: Sequence[str] = ()) -> None:
        """Raise, changing nothing, unless ``state`` fits this pruner: the types of the shared entries, its
        layers and its settings (a state saved without settings, by an older version, is checked for its
        layers only); ``keys`` are the subclass's entries, which must be present too. A squashed pruner
        loads nothing: it no longer controls the model."""
        self._check_not_squashed("load_state_dict()")
        check_type("state_dict", state, dict, "a dict")
        kind = state.get("kind", type(self).__name__)  # states saved before "kind" was recorded: by settings
        if differs(kind, type(self).__name__):
            raise ValueError(f"state_dict['kind'] is {shown(kind)}: the state was saved by another kind of "
                             f"pruner, this is a {type(self).__name__}")
        missing = {"step", "squashed", "layers", *keys} - state.keys()
        if missing:
            raise ValueError(f"state_dict is missing keys {sorted(missing)}")
        check_int("state_dict['step']", state["step"], minimum=0)
        squashed = check_bool("state_dict['squashed']", state["squashed"])
        layers = list(check_names("state_dict['layers']", state["layers"]))
        if layers != list(self.layers):
            saved, now = set(layers), set(self.layers)
            if saved == now and len(layers) == len(self.layers):
                first = next(i for i, (a, b) in enumerate(zip(layers, self.layers, strict=True)) if a != b)
                raise ValueError(f"state_dict was saved for the same layers in another order: layer {first} "
                                 f"is {layers[first]!r} in the checkpoint, {list(self.layers)[first]!r} in "
                                 "this pruner (a model whose modules were built in another order)")
            raise ValueError(
                "state_dict was saved for different layers: "
                f"only in the checkpoint {sorted(saved - now)}, only in this pruner {sorted(now - saved)}"
                + (f" ({len(layers)} entries for {len(saved)} names: a layer is listed twice)"
                   if len(layers) != len(saved) else "")
            )
        if squashed:
            raise ValueError("state_dict comes from a squashed pruner; load the squashed model instead")
        saved = check_type("state_dict['settings']", state.get("settings"), dict, "a dict", optional=True)
        saved, mine = saved or {}, self._settings()
        differ = sorted(k for k in saved.keys() & mine.keys() if differs(saved[k], mine[k]))
        if differ:
            raise ValueError("state_dict was saved by a pruner built with "
                             + ", ".join(f"{k}={shown(saved[k])}" for k in differ) + "; this one has "
                             + ", ".join(f"{k}={mine[k]!r}" for k in differ))
        if saved and saved.keys() != mine.keys():
            raise ValueError(f"state_dict was saved by a pruner with the settings {sorted(saved, key=str)}, "
                             f"this one has {sorted(mine)}: another kind of pruner or schedule")
