"""The model every mode runs: built from the model options, with its class names and eval preprocessing.

Weights come from one of three places, chosen by the options: a training checkpoint (``--weights``; it also says
which model, how many classes and their names, the image size and the eval preprocessing it was trained with), a
plain state dict (``--weights`` on a file that is not a checkpoint), timm's pretrained weights (``--pretrained``),
or a random initialisation (``--random-weights``). Flags override what a checkpoint says about preprocessing;
without a checkpoint the model's timm config gives it (`ipu_cnn.models.model_spec`).
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import torch

from ipu_cnn._serialization import load_weights_only
from ipu_cnn.inference.classes import IMAGENET_CLASSES, class_names_for
from ipu_cnn.inference.config import InferenceOptions
from ipu_cnn.models import (
    EvalPreprocessing,
    ModelShape,
    NormalizedModel,
    create_model,
    model_spec,
    resolve_model_name,
    unwrap_model,
)
from ipu_cnn.train.checkpoint import NotACheckpointError, load_checkpoint, resolve_checkpoint

@dataclass(frozen=True)
class ModelChoice:
    """Which model and weights an invocation asks for, and the preprocessing flags that override a checkpoint's.

    Attributes:
        mode: the inference mode (named in errors).

    The model is built in channels_last memory; a backend that wants another layout converts it (IPU).
    """

    mode: str
    model: str | None = None
    weights: str | None = None
    pretrained: bool = False
    random_weights: bool = False
    averaged_weights: bool = False
    num_classes: int | None = None
    image_size: int | None = None
    eval_crop_pct: float | None = None
    interpolation: str | None = None
    seed: int = 0
    shape: ModelShape = ModelShape()

    @classmethod
    def from_options(cls, options: InferenceOptions) -> ModelChoice:
        o = options
        return cls(o.mode, o.model, o.weights, o.pretrained, o.random_weights, o.averaged_weights, o.num_classes,
                   o.image_size, o.eval_crop_pct, o.interpolation, o.seed, ModelShape.from_record(o.as_dict()))


@dataclass
class LoadedModel:
    """A model in eval mode on the host, with what the modes need to feed it and to name its outputs.

    Attributes:
        model: the network with its `InputNormalizer` first (takes uint8 ``[B, 3, H, W]``).
        name: timm model name.
        num_classes: outputs of the classifier.
        class_names: one name per output.
        preprocessing: eval transform and normaliser parameters.
        weights: where the weights came from: ``"random"``, ``"pretrained"`` or a file path.
    """

    model: NormalizedModel
    name: str
    num_classes: int
    class_names: list[str]
    preprocessing: EvalPreprocessing
    weights: str

    def describe(self) -> str:
        """One line for logs: model, classes, input and weights."""
        p = self.preprocessing
        return (f"{self.name}, {self.num_classes} classes, {p.image_size} px (crop {p.crop_pct:g}, {p.interpolation}), "
                f"weights: {self.weights}")


def find_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The training checkpoint at `path` (a file, a checkpoint folder, or a run folder with ``checkpoints/``), or
    None when `path` is a file that is not an ipu_cnn checkpoint (a plain state dict)."""
    path = Path(path).expanduser()
    if path.is_dir():
        checkpoints = path / "checkpoints"
        return resolve_checkpoint(checkpoints if checkpoints.is_dir() else path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file or folder; give a training checkpoint "
                                "(RUN_DIR/checkpoints/checkpoint-*.pt), a run folder, or a state dict file")
    try:
        return path, load_checkpoint(path)
    except NotACheckpointError:
        return None  # a readable file that is not one of ours: create_model loads it as a plain state dict
    except ValueError as error:  # refused (it would run code), corrupt, truncated or incomplete
        raise ValueError(f"--weights {error}") from error


def _classifier_outputs(path: Path, timm_name: str) -> int | None:
    """Output count of the classifier in the plain state dict at `path` (None when it cannot be told)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(timm_name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if not classifier:
        return None
    state = load_weights_only(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        return None
    for key in (f"{classifier}.weight", f"module.{classifier}.weight"):
        weight = state.get(key)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


def _pretrained_source(timm_name: str) -> tuple[str, bool]:
    """The host timm downloads `timm_name`'s pretrained weights from, and whether they are already cached locally."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for {timm_name}: use --weights FILE or --random-weights")
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return "huggingface.co", False
        own = getattr(cfg, "hf_hub_filename", None)
        filenames = ([own] if isinstance(own, str) else []) + ["model.safetensors", "pytorch_model.bin",
                                                              "open_clip_pytorch_model.bin"]
        cached = any(isinstance(try_to_load_from_cache(hub_id, name), str) for name in filenames)
        return "huggingface.co", cached
    url = getattr(cfg, "url", None) or ""
    if not url:
        raise ValueError(f"timm has no pretrained weights for {timm_name}: use --weights FILE or --random-weights")
    cached = (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)).is_file()
    return urlparse(url).hostname or url, cached


def _reachable(host: str, timeout_s: float = 5.0) -> str | None:
    """None when a TCP connection to `host`:443 opens within `timeout_s`, else why not (name lookup included)."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout_s):
                outcome.append(None)
        except OSError as error:
            outcome.append(f"{type(error).__name__}: {error}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s * 2)
    return outcome[0] if outcome else f"no answer within {timeout_s * 2:g} s"


def check_pretrained_available(timm_name: str) -> None:
    """Fail fast, and say what to do, when `timm_name`'s pretrained weights are neither cached nor downloadable.

    Without this, the Hugging Face client retries an unreachable host for about a minute before timm gives up.
    With ``HF_HUB_OFFLINE=1`` the cache alone decides, as the client does.
    """
    host, cached = _pretrained_source(timm_name)
    if cached:
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline and host == "huggingface.co" else _reachable(host)
    if why is not None:
        raise RuntimeError(f"--pretrained: timm's weights for {timm_name} are not in the local cache and {host} cannot "
                           f"be reached ({why}). Run once where there is a network (timm caches the weights under "
                           "~/.cache/huggingface or ~/.cache/torch/hub), or pass --weights FILE (a state dict or an "
                           "ipu_cnn checkpoint), or --random-weights")


def load_model(choice: ModelChoice, *, default_weights: str | None = "random") -> LoadedModel:
    """Build the model `choice` describes, on the host, in eval mode.

    Args:
        default_weights: what to use when no weights option is given: ``"random"``, or None to require one.
    """
    c = choice
    weights_path = c.weights
    pretrained = bool(c.pretrained)
    random_weights = bool(c.random_weights)
    if not (weights_path or pretrained or random_weights):
        if default_weights is None:
            raise SystemExit(f"{c.mode} needs trained weights: give --weights "
                             "RUN_DIR/checkpoints/checkpoint-*.pt (or a run folder, or a state dict file), or "
                             "--pretrained (timm's ImageNet weights), or --random-weights to try the path without them")
        random_weights = True
    requested = resolve_model_name(c.model) if c.model else None

    checkpoint = find_checkpoint(weights_path) if weights_path else None
    if checkpoint is not None:
        path, ckpt = checkpoint
        name = str(ckpt["model_name"])
        if requested is not None and requested != name:
            raise SystemExit(f"--model {c.model} ({requested}) does not match the checkpoint {path}, which "
                             f"holds {name}: drop --model (the checkpoint names its model)")
        num_classes = int(ckpt["num_classes"])
        if c.num_classes not in (None, num_classes):
            raise SystemExit(f"--num-classes {c.num_classes} does not match the checkpoint {path}, which has "
                             f"{num_classes} classes: drop --num-classes")
        preprocessing = EvalPreprocessing.resolve(model_spec(name), image_size=c.image_size or ckpt.get("image_size"),
                                                  crop_pct=c.eval_crop_pct, interpolation=c.interpolation,
                                                  saved=ckpt.get("eval"))
        state = ckpt["model"]
        if c.averaged_weights:
            average = ckpt.get("weight_average")
            if not average:
                raise SystemExit(f"--averaged-weights: the checkpoint {path} holds no averaged weights (train with "
                                 "--weight-avg-strategy mean or exponential); drop the option")
            state = average["model"]
        # the shape the run trained (older checkpoints: the default shape); a checkpoint names its own
        shape = ModelShape.from_record(ckpt.get("model_shape") or ckpt.get("options"))
        if not c.shape.is_default and c.shape != shape:
            raise SystemExit(f"the shape options ({c.shape.describe()}) differ from the shape the checkpoint {path} "
                             f"was trained with ({shape.describe() or 'the default'}): drop them (the checkpoint "
                             "records its shape)")
        model = create_model(name, num_classes, mean=preprocessing.mean, std=preprocessing.std, shape=shape)
        try:
            unwrap_model(model).load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"the checkpoint {path} does not fit {name} with {num_classes} classes: {error}") \
                from error
        class_names = class_names_for(num_classes, ckpt.get("class_names"))
        source = str(path) + (" (averaged weights)" if c.averaged_weights else "")
    else:
        name = requested or resolve_model_name("resnet50")
        given = c.num_classes
        if weights_path and given is None:
            given = _classifier_outputs(Path(weights_path).expanduser(), name)
        num_classes = int(given or IMAGENET_CLASSES)
        preprocessing = EvalPreprocessing.resolve(model_spec(name), image_size=c.image_size, crop_pct=c.eval_crop_pct,
                                                  interpolation=c.interpolation)
        if pretrained:
            check_pretrained_available(name)
        torch.manual_seed(int(c.seed or 0))
        model = create_model(name, num_classes, pretrained=pretrained, weights=weights_path or None, shape=c.shape)
        class_names = class_names_for(num_classes)
        source = "pretrained" if pretrained else (str(weights_path) if weights_path else "random")
    model.eval()
    return LoadedModel(model, name, num_classes, class_names, preprocessing, source)
