"""Model annotations for IPUs: pipeline stages (``--pipeline-splits``) and recomputation checkpoints
(``--recompute-checkpoints``) placed at a model's named modules.

Graphcore's application named layers by their place in a traced graph, with ``/`` between levels
(``blocks/3/0/conv_pw``, ``layer4/0/downsample_0``) and its residual additions ``add``, ``add_1``, ... in execution
order. Here the names are the model's own ``named_modules()`` (``blocks.3.0.conv_pw``); `resolve_module_name` also
takes Graphcore's spellings: ``/`` for ``.``, a trailing ``_N`` for a child ``.N``, ``add_N`` for the output of the
N-th residual block (the block whose last op is that addition), torchvision's ``avgpool`` for timm's
``global_pool``, and Graphcore's MobileNet-v3 ``mb_block/N[/...]`` for the N-th block of timm's stages flattened (a
stage boundary at the block's first op). A name that resolves to nothing is an error that lists
the valid names, raised before anything is compiled.

Pure functions of the model and the PopTorch module handed in, so they are tested with a recording stand-in.
"""
from __future__ import annotations

import difflib
import re
from types import ModuleType
from typing import Any, Sequence

from torch import nn

#: residual blocks, in order: what Graphcore's traced ``add`` / ``add_N`` nodes end (timm ResNets: ``layer1.0``, ...;
#: EfficientNet / MobileNet: ``blocks.1.0``, ...).
_BLOCK_NAME = re.compile(r"^(layer\d+|blocks\.\d+)\.\d+$")
_ADD_NAME = re.compile(r"^add(?:_(\d+))?$")
#: torchvision's names (which Graphcore's ResNet configs use) for what timm calls otherwise
_TORCHVISION_NAMES = {"avgpool": "global_pool"}
#: Graphcore's MobileNet-v3 held its bottlenecks in one flat ``mb_block`` list; timm nests them in stages
_MB_BLOCK = re.compile(r"^mb_block\.(\d+)(?:\..*)?$")


def module_names(model: nn.Module) -> list[str]:
    """The model's named modules (without the root), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def flat_blocks(model: nn.Module) -> list[str]:
    """Names of the model's blocks (``layerS.B`` or ``blocks.S.B``) in definition order, stages flattened."""
    return [name for name, _ in model.named_modules() if _BLOCK_NAME.match(name)]


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks in definition order (the ones whose forward ends with an addition: blocks with
    a ``has_skip`` attribute set, as timm's EfficientNet blocks, or every ResNet block)."""
    blocks: list[str] = []
    for name, module in model.named_modules():
        if not _BLOCK_NAME.match(name):
            continue
        if getattr(module, "has_skip", True) is False:  # timm blocks without a skip connection add nothing
            continue
        blocks.append(name)
    return blocks


def _unknown(flag: str, name: str, names: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name.replace("/", "."), list(names), n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return ValueError(f"{flag}: the model has no module {name!r}{hint}; its modules are: {', '.join(names)}")


def resolve_module_name(model: nn.Module, name: str, flag: str, names: Sequence[str] | None = None) -> str:
    """The model's module name for `name` in our spelling or Graphcore's (see the module docstring), else a
    `ValueError` naming `flag` and listing the model's modules."""
    names = list(names) if names is not None else module_names(model)
    known = set(names)
    dotted = name.strip().replace("/", ".")
    if dotted in known:
        return dotted
    indexed = re.sub(r"_(\d+)$", r".\1", dotted)
    if indexed in known:
        return indexed
    if _TORCHVISION_NAMES.get(dotted) in known:
        return _TORCHVISION_NAMES[dotted]
    mb_block = _MB_BLOCK.match(dotted)
    if mb_block:  # the block's start is where its first op (Graphcore's mb_block/N/seq/0) starts
        blocks = flat_blocks(model)
        index = int(mb_block.group(1))
        if index < len(blocks):
            return blocks[index]
    add = _ADD_NAME.match(dotted)
    if add:
        blocks = residual_blocks(model)
        index = int(add.group(1) or 0)
        if index < len(blocks):
            return blocks[index]
        raise ValueError(f"{flag}: {name!r} is residual addition {index}, but the model has {len(blocks)} residual "
                         f"blocks (add .. add_{len(blocks) - 1})")
    raise _unknown(flag, name, names)


def pipeline_stages(model: nn.Module, splits: Sequence[str]) -> list[str]:
    """The module names where stages 1, 2, ... begin, checked: each exists, none repeats, and they follow the
    model's order (stage k must start after stage k - 1)."""
    names = module_names(model)
    order = {n: i for i, n in enumerate(names)}
    resolved = [resolve_module_name(model, s, "--pipeline-splits", names) for s in splits]
    for previous, current, given in zip(resolved, resolved[1:], list(splits)[1:]):
        if current == previous or current.startswith(previous + "."):
            raise ValueError(f"--pipeline-splits: {given!r} is inside or equal to the split before it ({previous!r}); "
                             "give each stage's first module once, in the model's order")
        if order[current] < order[previous]:
            raise ValueError(f"--pipeline-splits: {given!r} comes before {previous!r} in the model; list the splits "
                             "in the model's order")
    return resolved


def recompute_targets(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The module names that get a recomputation checkpoint on their output: each entry is a module name (our
    spelling or Graphcore's) or, as in Graphcore's application, a regular expression matched against whole names;
    an entry that selects nothing is an error."""
    names = module_names(model)
    chosen: list[str] = []
    for pattern in patterns:
        try:
            hits = [resolve_module_name(model, pattern, "--recompute-checkpoints", names)]
        except ValueError as not_a_name:
            try:
                rule = re.compile(pattern.replace("/", r"\."))
            except re.error:
                raise not_a_name from None
            hits = [n for n in names if rule.fullmatch(n)]
            if not hits:
                raise not_a_name from None
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def annotate_for_ipu(model: nn.Module, poptorch: ModuleType, *, pipeline_splits: Sequence[str] = (),
                     recompute_checkpoints: Sequence[str] = ()) -> list[Any]:
    """Mark `model` in place for PopTorch: ``poptorch.BeginBlock(module, ipu_id=k)`` at the first module of stage
    k (the modules before the first split run on IPU 0), and a ``poptorch.recomputationCheckpoint`` on the output of
    every module `recompute_checkpoints` selects. Returns the forward-hook handles of the checkpoints."""
    for stage, name in enumerate(pipeline_stages(model, pipeline_splits), start=1):
        parent, child = _parent(model, name)
        module = getattr(parent, child)
        wrapped = poptorch.BeginBlock(module, ipu_id=stage)
        if isinstance(wrapped, nn.Module) and wrapped is not module:  # older PopTorch returned a wrapper
            setattr(parent, child, wrapped)
    handles = []
    for name in recompute_targets(model, recompute_checkpoints):
        def checkpoint(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            return poptorch.recomputationCheckpoint(output)

        handles.append(model.get_submodule(name).register_forward_hook(checkpoint))
    return handles
