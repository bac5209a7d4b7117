"""What every weight pruner here shares: layer discovery, parametrization, squash and state checks."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._checks import check_bool, check_int, check_names, check_type, differs, shown
from .layers import DEFAULT_LAYER_TYPES, IgnoredLayers, find_prunable_layers
from .parametrizations import pruning_parametrization
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


class BasePruner(Pruner):
    """Prepares ``model`` by registering one parametrization per prunable layer's ``weight``.

    Order of use (as ``torch.ao.pruning``): build the pruner, then move to the device / wrap in DDP; the
    optimizer may be built before or after, since the weight ``Parameter`` objects are kept. Call ``step()``
    after ``optimizer.step()`` and before ``lr_scheduler.step()``, or let :meth:`attach` do it.

    Every ``all_zero_check_every`` steps (and at the first) ``step()`` checks whether a pruned layer's
    effective weights have become all zero and warns once per layer: one reduction per layer and one device
    sync, about a hundredth of a forward pass at the default of 100 (0 turns the check off).
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
        for name, module in self.layers.items():
            if pruning_parametrization(module) is not None:
                raise ValueError(f"layer {name!r} is already prepared by an snn_lats pruner; squash it first")
        self.step_count = 0
        self.squashed = False
        self._attachment: Attachment | None = None
        self._from_hook = False
        self._all_zero: set[str] = set()  # layers already warned about

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
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [name for name, w in zip(self.layers, self.weights(), strict=True) if id(w) not in held]
        if missing:
            raise ValueError(f"optimizer does not hold the pruned weights of {len(missing)} layer(s), e.g. "
                             f"{missing[:3]}; build it from model.parameters() (or pruner.weights())")
        self._prepare_attach(optimizer)
        self._attachment = Attachment(self, optimizer)
        return self._attachment

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
        return {"step": self.step_count, "squashed": self.squashed, "layers": list(self.layers),
                "settings": self._settings()}

    def _load_base_state(self, state: dict[str, Any]) -> None:
        """Check ``state`` (:meth:`_check_base_state`), then restore the step count."""
        self._check_base_state(state)
        self.step_count = int(state["step"])

    def _check_base_state(self, state: dict[str, Any], keys: Sequence[str] = ()) -> None:
        """Raise, changing nothing, unless ``state`` fits this pruner: the types of the shared entries, its
        layers and its settings (a state saved without settings, by an older version, is checked for its
        layers only); ``keys`` are the subclass's entries, which must be present too."""
        check_type("state_dict", state, dict, "a dict")
        missing = {"step", "squashed", "layers", *keys} - state.keys()
        if missing:
            raise ValueError(f"state_dict is missing keys {sorted(missing)}")
        check_int("state_dict['step']", state["step"], minimum=0)
        squashed = check_bool("state_dict['squashed']", state["squashed"])
        layers = list(check_names("state_dict['layers']", state["layers"]))
        if layers != list(self.layers):
            saved, now = set(layers), set(self.layers)
            raise ValueError(
                "state_dict was saved for different layers: "
                f"only in the checkpoint {sorted(saved - now)}, only in this pruner {sorted(now - saved)}"
            )
        if squashed and not self.squashed:
            raise ValueError("state_dict comes from a squashed pruner; load the squashed model instead")
        saved = check_type("state_dict['settings']", state.get("settings"), dict, "a dict", optional=True)
        saved, mine = saved or {}, self._settings()
        differ = sorted(k for k in saved.keys() & mine.keys() if differs(saved[k], mine[k]))
        if differ:
            raise ValueError("state_dict was saved by a pruner built with "
                             + ", ".join(f"{k}={shown(saved[k])}" for k in differ) + "; this one has "
                             + ", ".join(f"{k}={mine[k]!r}" for k in differ))
