"""Backends: precision mapping, device selection, the PopTorch option/optimizer mapping (with a recording stand-in
for PopTorch), and the error when PopTorch is missing."""
from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch

from ipu_cnn.backends import (
    POPTORCH_MISSING,
    import_poptorch,
    ipu_optimizer,
    ipu_options,
    precision_policy,
    resolve_device_type,
    select_device,
)
from ipu_cnn.train.config import config_from_mapping
from ipu_cnn.train.plan import ipu_settings, optimizer_settings


# -- precision --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, device, dtype, scaling", [
    ("32.32", "cpu", None, "none"),
    ("32.32", "cuda", None, "none"),
    ("16.32", "cpu", torch.bfloat16, "none"),
    ("16.16", "cpu", torch.bfloat16, "none"),
    ("16.32", "cuda", torch.float16, "dynamic"),
    ("16.16", "cuda", torch.float16, "dynamic"),
])
def test_precision_defaults(precision: str, device: str, dtype: torch.dtype | None, scaling: str) -> None:
    policy = precision_policy(precision, device)
    assert policy.autocast_dtype == dtype and policy.loss_scaling == scaling


def test_precision_loss_scaling_choices() -> None:
    assert precision_policy("16.16", "cuda", loss_scaling=128.0).loss_scaling == "static"
    p = precision_policy("16.16", "cuda", loss_scaling=128.0, auto_loss_scaling=True)
    assert p.loss_scaling == "dynamic" and p.loss_scale == 128.0
    assert precision_policy("16.16", "cpu", "float16").loss_scaling == "dynamic"
    assert precision_policy("16.16", "cuda", "bfloat16").loss_scaling == "none"
    assert precision_policy("32.32", "cpu", loss_scaling=64.0).loss_scaling == "static"
    assert precision_policy("16.16", "cpu").half_weights and not precision_policy("16.32", "cpu").half_weights


def test_precision_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="16.16, 16.32, 32.32"):
        precision_policy("16", "cpu")
    with pytest.raises(ValueError, match="--auto-loss-scaling needs half precision"):
        precision_policy("32.32", "cpu", auto_loss_scaling=True)


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert resolve_device_type("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use --device cpu"):
            select_device("cuda")


# -- PopTorch missing -------------------------------------------------------------------------------------------
def test_ipu_without_poptorch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "poptorch", None)  # makes `import poptorch` raise ImportError
    with pytest.raises(RuntimeError) as info:
        import_poptorch()
    assert str(info.value) == POPTORCH_MISSING
    assert "Poplar SDK" in POPTORCH_MISSING and "--device cpu or cuda" in POPTORCH_MISSING


def test_train_cli_device_ipu_without_poptorch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                               tmp_path) -> None:
    from ipu_cnn.train.__main__ import main

    monkeypatch.setitem(sys.modules, "poptorch", None)
    status = main(["--device", "ipu", "--data", "synthetic", "--model", "test_resnet", "--output-dir",
                   str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert POPTORCH_MISSING in err and "Traceback" not in err


# -- PopTorch option mapping ------------------------------------------------------------------------------------
class Recorder:
    """Records every call made through attribute chains: ``opts.Training.gradientAccumulation(4)``."""

    def __init__(self, calls: list[tuple[str, tuple, dict]], path: str = "") -> None:
        self._calls = calls
        self._path = path

    def __getattr__(self, name: str) -> Recorder:
        return Recorder(self._calls, f"{self._path}.{name}" if self._path else name)

    def __call__(self, *args: Any, **kwargs: Any) -> Recorder:
        self._calls.append((self._path, args, kwargs))
        return self


def fake_poptorch(calls: list, hardware_version: int = -1) -> types.ModuleType:
    """A stand-in for PopTorch's public names that records every call made through them."""
    module = types.ModuleType("poptorch")
    module.Options = lambda: Recorder(calls, "Options()")  # type: ignore[attr-defined]
    module.ReductionType = types.SimpleNamespace(Mean="Mean", Sum="Sum")  # type: ignore[attr-defined]
    module.OutputMode = types.SimpleNamespace(All="All", Final="Final")  # type: ignore[attr-defined]
    module.OverlapMode = types.SimpleNamespace(OverlapAccumulationLoop="OverlapAccumulationLoop")  # type: ignore
    module.optim = Recorder(calls, "optim")  # type: ignore[attr-defined]
    module.ShardedExecution = lambda: "ShardedExecution()"  # type: ignore[attr-defined]
    module.TensorLocationSettings = lambda: Recorder(calls, "TensorLocationSettings()")  # type: ignore[attr-defined]
    module.ipuHardwareVersion = lambda: hardware_version  # type: ignore[attr-defined]

    def begin_block(module_: Any, user_id: Any = None, ipu_id: Any = None) -> Any:
        calls.append(("BeginBlock", (module_,), {"ipu_id": ipu_id}))
        return module_

    def checkpoint(tensor: Any) -> Any:
        calls.append(("recomputationCheckpoint", (tensor,), {}))
        return tensor

    module.BeginBlock = begin_block  # type: ignore[attr-defined]
    module.recomputationCheckpoint = checkpoint  # type: ignore[attr-defined]
    return module


def _ipu_config(**overrides: Any) -> Any:
    return ipu_settings(config_from_mapping({"data": "synthetic", **overrides}))


def _ipu_optimizer(groups: list, poptorch: types.ModuleType, **overrides: Any) -> Any:
    options = config_from_mapping({"data": "synthetic", **overrides})
    return ipu_optimizer(optimizer_settings(options, options.lr), options.precision, groups, poptorch)


def _calls_by_path(calls: list) -> dict[str, tuple[tuple, dict]]:
    return {path.removeprefix("Options()."): (args, kwargs) for path, args, kwargs in calls}


def test_ipu_options_training_mapping() -> None:
    calls: list = []
    config = _ipu_config(replicas=4, device_iterations=8, gradient_accumulation=16, precision="16.16",
                         half_partial=True, enable_stochastic_rounding=True, auto_loss_scaling=True,
                         recompute_mode="auto", available_memory_proportion=0.6, executable_cache_dir="/cache",
                         seed=7)
    ipu_options(config, fake_poptorch(calls), training=True)
    got = _calls_by_path(calls)
    assert got["replicationFactor"] == ((4,), {})
    assert got["deviceIterations"] == ((8,), {})
    assert got["randomSeed"] == ((7,), {})
    assert got["Training.gradientAccumulation"] == ((16,), {})
    assert got["Training.accumulationAndReplicationReductionType"] == (("Mean",), {})
    assert got["Training.setAutomaticLossScaling"] == ((True,), {})
    assert got["Precision.setPartialsType"] == ((torch.float16,), {})
    assert got["Precision.enableStochasticRounding"] == ((True,), {})
    popart = [args for path, args, _ in calls if path == "Options()._Popart.set"]
    assert ("explicitRecomputation", True) in popart and ("autoRecomputation", 1) in popart
    assert got["setAvailableMemoryProportion"] == (({"IPU0": 0.6},), {})
    assert "enableSyntheticData" in got  # --data synthetic: the IPU makes its own data, in training too
    assert got["enableExecutableCaching"] == (("/cache",), {})
    assert got["outputMode"] == (("All",), {})


def test_ipu_options_inference_and_fp32() -> None:
    calls: list = []
    ipu_options(_ipu_config(precision="32.32", gradient_accumulation=4, auto_loss_scaling=False),
                fake_poptorch(calls), training=False)
    got = _calls_by_path(calls)
    assert not any(k.startswith("Training.") for k in got)
    assert "Precision.setPartialsType" not in got and "Precision.enableStochasticRounding" not in got
    assert "_Popart.set" not in got and "enableExecutableCaching" not in got


def test_ipu_options_under_popdist_take_popdists_options() -> None:
    calls: list = []
    popdist = types.SimpleNamespace(poptorch=types.SimpleNamespace(
        Options=lambda **kwargs: calls.append(("popdist.Options", (), kwargs)) or Recorder(calls, "Options()")))
    ipu_options(_ipu_config(replicas=2, pipeline_splits=["layer3"]), fake_poptorch(calls),
                popdist=popdist)  # type: ignore[arg-type]
    got = _calls_by_path(calls)
    assert "replicationFactor" not in got  # popdist sets the instance's replicas
    assert got["popdist.Options"] == ((), {"ipus_per_replica": 2})  # one IPU per pipeline stage


@pytest.mark.parametrize("name, cls, extra", [
    ("sgd", "optim.SGD", {"use_combined_accum": False, "momentum": 0.9}),
    ("sgd_combined", "optim.SGD", {"use_combined_accum": True}),
    ("adamw", "optim.AdamW", {"eps": 1e-8}),
    ("rmsprop", "optim.RMSprop", {"use_tf_variant": False, "alpha": 0.9}),
    ("rmsprop_tf", "optim.RMSprop", {"use_tf_variant": True}),
])
def test_ipu_optimizer_mapping(name: str, cls: str, extra: dict) -> None:
    calls: list = []
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "weight_decay": 1e-4}]
    _ipu_optimizer(groups, fake_poptorch(calls), optimizer=name, precision="16.32", loss_scaling=128.0,
                   weight_decay=1e-4, lr=0.5)
    path, args, kwargs = calls[-1]
    assert path == cls and args[0] == groups
    assert kwargs["lr"] == 0.5 and kwargs["weight_decay"] == 1e-4 and kwargs["loss_scaling"] == 128.0
    for key, value in extra.items():
        assert kwargs[key] == value
    state_key = "velocity_accum_type" if cls == "optim.SGD" else "accum_type"
    assert kwargs[state_key] == torch.float32  # 16.32: float32 optimiser state


def test_ipu_optimizer_half_state_for_16_16() -> None:
    calls: list = []
    _ipu_optimizer([], fake_poptorch(calls), optimizer="sgd", precision="16.16")
    assert calls[-1][2]["velocity_accum_type"] == torch.float16
