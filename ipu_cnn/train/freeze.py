"""Freezing the layers before a given one, for the fine-tuning stage of ``--half-res-training``.

As Graphcore's ``fine_tune``: walking the plain network's parameters in definition order, every one before the first
whose path starts with the named layer stops taking gradients; walking its modules the same way, every module before
that layer runs in eval mode, so BatchNorm keeps its running statistics (and normalises with them) and dropout is
off. The names are the timm model's module paths (``blocks.5.3``; Graphcore's ``blocks/5/3`` is accepted by the
caller); a layer matches on whole path components, so ``blocks.5.3`` is not ``blocks.5.30``.

Training mode is set per epoch by the loop (``model.train()``), which would undo the eval mode of the frozen part, so
the loop calls `FrozenPrefix.train_mode` instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def _within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


@dataclass(frozen=True)
class FrozenPrefix:
    """The frozen part of a network: its parameter names and its modules kept in eval mode."""

    layer: str
    parameters: tuple[str, ...]
    modules: tuple[nn.Module, ...]

    def train_mode(self, model: nn.Module) -> None:
        """`model` (any wrapper around the frozen network) in training mode, the frozen modules in eval mode."""
        model.train()
        for module in self.modules:
            module.eval()


def freeze_before(network: nn.Module, layer: str) -> FrozenPrefix:
    """Freeze the parameters of `network` (the plain timm model) defined before `layer` and put the modules before it
    in eval mode; returns what was frozen.

    Raises:
        SystemExit: no parameter of `network` lies in `layer`; the message lists the top-level layers.
    """
    names = [name for name, _ in network.named_parameters()]
    first = next((i for i, name in enumerate(names) if _within(name, layer)), None)
    if first is None:
        top = list(dict.fromkeys(name.split(".")[0] for name in names))
        raise SystemExit(f"--fine-tune-first-trainable-layer {layer.replace('.', '/')}: no parameter of the model lies "
                         f"in that layer; its top-level layers are {', '.join(top)} (go deeper with / or ., e.g. "
                         f"{top[len(top) // 2]}/0)")
    frozen = []
    for name, param in network.named_parameters():
        if _within(name, layer):
            break
        param.requires_grad_(False)
        frozen.append(name)
    modules = []
    for name, module in network.named_modules():  # pre-order: a module's whole subtree follows it
        if name and _within(name, layer):
            break
        if name and not _within(layer, name):  # the layer's ancestors hold trainable modules too
            modules.append(module)
    prefix = FrozenPrefix(layer, tuple(frozen), tuple(modules))
    prefix.train_mode(network)
    return prefix
