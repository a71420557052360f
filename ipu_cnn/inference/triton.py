"""A Triton Inference Server model repository for an exported model: folder layout, ``config.pbtxt``, labels.

Layout (Triton's documented model repository convention)::

    REPO/NAME/config.pbtxt
    REPO/NAME/labels.txt          one class name per line, in output order
    REPO/NAME/1/model.onnx        (onnxruntime backend) or model.pt (pytorch backend, TorchScript)

Triton itself is not installed where ipu_cnn is tested: the files are checked for their layout and contents only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

#: What each export format is called in Triton: backend, model file name, input and output tensor names.
TRITON_FORMATS: dict[str, dict[str, str]] = {
    "onnx": {"backend": "onnxruntime", "file": "model.onnx"},
    "torchscript": {"backend": "pytorch", "file": "model.pt", "input": "INPUT__0", "output": "OUTPUT__0"},
}


def model_file(repository: str | Path, name: str, fmt: str, version: int = 1) -> Path:
    """Where the model file of `name` goes in `repository` (its version folder is created)."""
    folder = Path(repository) / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / TRITON_FORMATS[fmt]["file"]


def tensor_names(fmt: str, input_name: str, output_name: str) -> tuple[str, str]:
    """The input and output names Triton sees: the graph's for ONNX, the pytorch backend's convention for
    TorchScript (whose graphs carry no names)."""
    spec = TRITON_FORMATS[fmt]
    return spec.get("input", input_name), spec.get("output", output_name)


def config_pbtxt(name: str, fmt: str, input_name: str, input_dims: Sequence[int], output_name: str,
                 num_classes: int, max_batch_size: int) -> str:
    """The model configuration: uint8 input of `input_dims` (batch excluded), float32 scores, dynamic batching."""
    spec = TRITON_FORMATS[fmt]
    dims = ", ".join(str(int(d)) for d in input_dims)
    return (
        f'name: "{name}"\n'
        f'backend: "{spec["backend"]}"\n'
        f"max_batch_size: {int(max_batch_size)}\n"
        "input [\n"
        "  {\n"
        f'    name: "{input_name}"\n'
        "    data_type: TYPE_UINT8\n"
        f"    dims: [ {dims} ]\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        f'    name: "{output_name}"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: [ {int(num_classes)} ]\n"
        '    label_filename: "labels.txt"\n'
        "  }\n"
        "]\n"
        "dynamic_batching { }\n"
    )


def write_repository_files(repository: str | Path, name: str, fmt: str, input_name: str, input_dims: Sequence[int],
                           output_name: str, class_names: Sequence[str], max_batch_size: int) -> list[Path]:
    """Write ``config.pbtxt`` and ``labels.txt`` of model `name` (the model file is written by the exporter at
    `model_file`); returns the paths written."""
    folder = Path(repository) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.pbtxt"
    config.write_text(config_pbtxt(name, fmt, input_name, input_dims, output_name, len(class_names), max_batch_size))
    labels = folder / "labels.txt"
    labels.write_text("".join(f"{n}\n" for n in class_names))
    return [config, labels]
