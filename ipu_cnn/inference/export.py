"""Export mode: the model as ONNX or TorchScript, taking uint8 images, normalising inside the graph, any batch size.

A server then only decodes, resizes and crops (the JSON written beside the model says how) and sends uint8 pixels;
mean and standard deviation are the graph's first ops, as they are the model's first op in training. After writing,
the file is loaded back and run on a batch of a different size from the one traced (which also proves the batch
dimension is dynamic), and its outputs are compared with PyTorch's: with onnxruntime for ONNX (when installed; the
``export`` extra installs it), with ``torch.jit.load`` for TorchScript.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ipu_cnn.backends import ignored_ipu_options, resolve_device_type, select_device
from ipu_cnn.inference import triton
from ipu_cnn.inference.config import InferenceOptions
from ipu_cnn.inference.model import LoadedModel, ModelChoice, load_model

#: Largest difference allowed between the exported model's outputs and PyTorch's (float32 logits or probabilities).
TOLERANCE = 1e-3
INPUT_NAME = "images"
_EXTRA_HINT = "pip install 'ipu_cnn[export]' (onnx, onnxscript, onnxruntime)"


class ExportModule(nn.Module):
    """What is exported: uint8 images (NCHW or NHWC) -> the normalised network -> logits or probabilities."""

    def __init__(self, model: nn.Module, input_layout: str = "nchw", softmax: bool = False) -> None:
        super().__init__()
        if input_layout not in ("nchw", "nhwc"):
            raise ValueError(f"--input-layout must be nchw or nhwc, got {input_layout!r}")
        self.model = model
        self.nhwc = input_layout == "nhwc"
        self.softmax = softmax

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            images = images.permute(0, 3, 1, 2)
        logits = self.model(images).float()
        return torch.softmax(logits, dim=1) if self.softmax else logits


def _import_onnx_exporter() -> None:
    """Check for what torch's ONNX exporter needs (onnx, onnxscript), or say which extra installs it."""
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RuntimeError(f"ONNX export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                           f"not installed: {_EXTRA_HINT}; or export with --format torchscript")


def example_batch(batch: int, image_size: int, input_layout: str, seed: int = 0) -> torch.Tensor:
    """Random uint8 images shaped for the exported input."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, image_size, image_size) if input_layout == "nchw" else (batch, image_size, image_size, 3)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, output_name: str,
                opset: int | None = None) -> None:
    """Write `module` as ONNX (torch's dynamo exporter) with a dynamic batch dimension and the weights inside."""
    _import_onnx_exporter()
    batch = torch.export.Dim("batch", min=1, max=65536)
    large = sum(p.numel() * p.element_size() for p in module.parameters()) > 1_800_000_000  # protobuf's 2 GB cap
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[output_name], dynamic_shapes={"images": {0: batch}},
                                    external_data=large, verbose=False, **kwargs)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program: this torch is too old for the dynamo exporter "
                           "(needs torch >= 2.5)")
    program.save(str(path), external_data=large)


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write `module` traced to TorchScript (the batch dimension stays free: nothing in it depends on the batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; TorchScript is what Triton's backend loads
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced.cpu(), str(path))


def check_onnx(path: Path, images: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on `images` and compare with `expected` (skipped without onnxruntime)."""
    import onnx

    onnx.checker.check_model(str(path))
    try:
        import onnxruntime
    except ImportError:
        return {"checked": False, "reason": f"onnxruntime is not installed ({_EXTRA_HINT})"}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {INPUT_NAME: images.numpy()})
    return _compare(torch.from_numpy(output), expected, "onnxruntime")


def check_torchscript(path: Path, images: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    """Load the TorchScript file and compare its outputs on `images` with `expected`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        output = loaded(images)
    return _compare(output, expected, "torch.jit.load")


def _compare(output: torch.Tensor, expected: torch.Tensor, runtime: str) -> dict[str, Any]:
    if tuple(output.shape) != tuple(expected.shape):
        raise RuntimeError(f"the exported model's output is {list(output.shape)} for a batch where PyTorch gives "
                           f"{list(expected.shape)}: the export is wrong, please report it")
    difference = float((output.float() - expected.float()).abs().max())
    if not difference <= TOLERANCE:
        raise RuntimeError(f"the exported model ({runtime}) differs from PyTorch by up to {difference:.3g} (allowed: "
                           f"{TOLERANCE:g}); the file is written but should not be served")
    return {"checked": True, "runtime": runtime, "max_abs_difference": difference, "tolerance": TOLERANCE,
            "batch": int(expected.shape[0])}


def _format_for(options: InferenceOptions) -> str:
    if options.format:
        return str(options.format)
    if options.triton:
        raise SystemExit("--triton needs --format onnx or --format torchscript (OUT is a folder)")
    return "onnx" if str(options.output).lower().endswith(".onnx") else "torchscript"


def metadata(loaded: LoadedModel, fmt: str, input_layout: str, input_name: str, output_name: str,
             softmax: bool) -> dict[str, Any]:
    """What a client needs to feed the exported model and read its output (tensor names as the server shows them)."""
    p = loaded.preprocessing
    size = p.image_size
    shape = ["batch", 3, size, size] if input_layout == "nchw" else ["batch", size, size, 3]
    return {
        "format": fmt, "model": loaded.name, "weights": loaded.weights, "num_classes": loaded.num_classes,
        "input": {"name": input_name, "dtype": "uint8", "layout": input_layout.upper(), "shape": shape,
                  "channels": "RGB"},
        "output": {"name": output_name, "dtype": "float32", "shape": ["batch", loaded.num_classes],
                   "meaning": "probabilities" if softmax else "logits"},
        "preprocessing": {**p.as_dict(), "resize_shorter_side_to": p.eval_transform().resize,
                          "then": f"centre crop {size}x{size}, antialiased {p.interpolation} (mean/std are applied "
                                  "inside the graph)"},
        "class_names": list(loaded.class_names),
    }


def run_export(options: InferenceOptions) -> dict[str, Any]:
    """Export as `options` say; returns a report (files written, check result) and prints it."""
    fmt = _format_for(options)
    if options.precision != "32.32":
        raise SystemExit("export writes float32 graphs: drop --precision 16.16 and convert the exported model with "
                         "the serving stack's tools (e.g. TensorRT --fp16, onnxconverter-common), which choose the "
                         "layers that are safe in half precision")
    if fmt == "onnx":
        _import_onnx_exporter()  # before the model is built: a missing extra is the first thing said
    device_type = resolve_device_type(options.device)
    for line in ignored_ipu_options(options, device_type):  # export is never on an IPU (the parser refuses it)
        print(line, file=sys.stderr)
    loaded = load_model(ModelChoice.from_options(options), default_weights=None)
    layout = str(options.input_layout or "nchw")
    softmax = bool(options.softmax)
    output_name = "probabilities" if softmax else "logits"
    device = select_device(device_type)
    module = ExportModule(loaded.model, layout, softmax).to(device).eval()
    size = loaded.preprocessing.image_size
    example = example_batch(2, size, layout).to(device)

    out = Path(str(options.output)).expanduser()
    written: list[Path] = []
    input_name, served_output = INPUT_NAME, output_name
    if options.triton:
        name = str(options.triton_name or loaded.name)
        path = triton.model_file(out, name, fmt)
        input_name, served_output = triton.tensor_names(fmt, INPUT_NAME, output_name)
        dims = [3, size, size] if layout == "nchw" else [size, size, 3]
        written += triton.write_repository_files(out, name, fmt, input_name, dims, served_output, loaded.class_names,
                                                 int(options.max_batch_size or 64))
    else:
        path = out
        path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        export_onnx(module.cpu(), example.cpu(), path, output_name, options.opset)
    else:
        export_torchscript(module, example, path)
    written.insert(0, path)
    if Path(str(path) + ".data").exists():
        written.insert(1, Path(str(path) + ".data"))
    info = path.with_name(path.name + ".json") if not options.triton else path.parent.parent / "ipu_cnn.json"
    info.write_text(json.dumps(metadata(loaded, fmt, layout, input_name, served_output, softmax), indent=2) + "\n")
    written.append(info)

    report: dict[str, Any] = {"format": fmt, "files": [str(p) for p in written], "model": loaded.describe()}
    if options.check is not False:
        images = example_batch(3, size, layout, seed=1)
        with torch.inference_mode():
            expected = module.cpu()(images)
        report["check"] = check_onnx(path, images, expected) if fmt == "onnx" else \
            check_torchscript(path, images, expected)
    print(f"exported {loaded.describe()}", file=sys.stderr)
    for p in written:
        print(f"wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB)", file=sys.stderr)
    check = report.get("check")
    if check and check.get("checked"):
        print(f"check: {check['runtime']} agrees with PyTorch on a batch of {check['batch']} (max |difference| "
              f"{check['max_abs_difference']:.2g} <= {check['tolerance']:g})", file=sys.stderr)
    elif check:
        print(f"check skipped: {check['reason']}", file=sys.stderr)
    return report
