"""The remaining IPU options of Graphcore's application, mapped to ``poptorch.Options`` and model annotations (checked
against the recording stand-in of `test_backends`), their validation, what CPU/CUDA runs do with them, the
optimizer pushed only when its values change, and the poprun collectives (against a threaded Horovod stand-in)."""
from __future__ import annotations

import math
import threading
import types
from typing import Any, Callable

import pytest
import timm
import torch
from test_backends import Recorder, _calls_by_path, _ipu_config, fake_poptorch

from ipu_cnn.backends import DistContext, IpuBackend, IpuSettings, ipu_options
from ipu_cnn.backends.distributed import HOROVOD_MISSING, popdist_replica_note, poprun_context
from ipu_cnn.backends.ipu import IpuTrainStep, _ModelWithLoss, check_ipu_settings, ignored_ipu_options
from ipu_cnn.backends.ipu_model import annotate_for_ipu, pipeline_stages, recompute_targets, resolve_module_name
from ipu_cnn.train.config import config_from_mapping, parse_config
from ipu_cnn.train.plan import ipu_settings, plan_batches
from ipu_cnn.train.schedule import LRSchedule, create_scheduler


def _popart(calls: list) -> dict[str, Any]:
    return {args[0]: args[1] for path, args, _ in calls if path == "Options()._Popart.set"}


# -- option mapping --------------------------------------------------------------------------------------------
def test_memory_proportion_per_stage_and_one_for_all() -> None:
    calls: list = []
    ipu_options(_ipu_config(pipeline_splits=["layer2", "layer3", "layer4"],
                            available_memory_proportion=[0.1, 0.2, 0.3, 0.4]), fake_poptorch(calls))
    assert _calls_by_path(calls)["setAvailableMemoryProportion"] == (
        ({"IPU0": 0.1, "IPU1": 0.2, "IPU2": 0.3, "IPU3": 0.4},), {})
    calls.clear()
    ipu_options(_ipu_config(pipeline_splits=["layer3"], available_memory_proportion=[0.15]), fake_poptorch(calls))
    assert _calls_by_path(calls)["setAvailableMemoryProportion"] == (({"IPU0": 0.15, "IPU1": 0.15},), {})


def test_pipelined_model_leaves_recomputation_to_pipelining() -> None:
    calls: list = []
    ipu_options(_ipu_config(pipeline_splits=["layer3"], recompute_mode="manual"), fake_poptorch(calls))
    assert "autoRecomputation" not in _popart(calls) and "explicitRecomputation" not in _popart(calls)
    calls.clear()
    ipu_options(_ipu_config(recompute_mode="manual", recompute_checkpoints=["layer4"]), fake_poptorch(calls))
    assert _popart(calls)["autoRecomputation"] == 3 and _popart(calls)["explicitRecomputation"] is True


def test_engine_options_exchange_target_and_profile() -> None:
    calls: list = []
    ipu_options(ipu_settings(config_from_mapping({"data": "synthetic", "device": "ipu", "profile": "",
                                                  "exchange_memory_target": "memory"}), profile_dir="/runs/r/profile"),
                fake_poptorch(calls))
    engine = _popart(calls)["engineOptions"]
    assert engine["opt.internalExchangeOptimisationTarget"] == "memory"
    assert engine["autoReport.directory"] == "/runs/r/profile" and engine["autoReport.all"] == "true"
    calls.clear()
    ipu_options(ipu_settings(config_from_mapping({"data": "synthetic", "device": "ipu", "profile": "/tmp/p"})),
                fake_poptorch(calls))
    assert _popart(calls)["engineOptions"]["autoReport.directory"] == "/tmp/p"  # an explicit folder wins
    calls.clear()
    ipu_options(_ipu_config(), fake_poptorch(calls))
    assert "engineOptions" not in _popart(calls)


def test_io_tiles() -> None:
    calls: list = []
    ipu_options(_ipu_config(num_io_tiles=64), fake_poptorch(calls))
    got = _calls_by_path(calls)
    assert got["TensorLocations.numIOTiles"] == ((64,), {})
    assert got["setExecutionStrategy"] == (("ShardedExecution()",), {})
    assert _popart(calls)["defaultPrefetchBufferingDepth"] == 3
    calls.clear()
    ipu_options(_ipu_config(num_io_tiles=32, pipeline_splits=["layer3"]), fake_poptorch(calls))
    assert "setExecutionStrategy" not in _calls_by_path(calls)  # a pipeline keeps its pipelined execution


def test_io_tiles_mark_inputs_and_outputs_for_overlap() -> None:
    calls: list = []
    poptorch = fake_poptorch(calls)
    poptorch.set_overlap_for_input = lambda t, mode: calls.append(("in", mode, tuple(t.shape))) or t  # type: ignore
    poptorch.set_overlap_for_output = lambda t, mode: calls.append(("out", mode, tuple(t.shape))) or t  # type: ignore
    poptorch.identity_loss = lambda loss, reduction: loss  # type: ignore[attr-defined]
    wrapped = _ModelWithLoss(torch.nn.Linear(3, 2), torch.nn.functional.cross_entropy, poptorch, overlap_io=True)
    wrapped(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    marks = [(c[0], c[2]) for c in calls]
    assert marks == [("in", (4, 3)), ("in", (4,)), ("out", (4, 2)), ("out", ())]
    assert {c[1] for c in calls} == {"OverlapAccumulationLoop"}


def test_optimizer_state_offload_and_sharding() -> None:
    calls: list = []
    ipu_options(_ipu_config(offload_optimizer=True, enable_optimizer_rts=True, replicas=4), fake_poptorch(calls))
    got = {p: a for p, a, _ in calls}
    assert got["TensorLocationSettings().useOnChipStorage"] == (False,)
    assert got["TensorLocationSettings().useReplicatedTensorSharding"] == (True,)
    assert "Options().TensorLocations.setOptimizerLocation" in got
    calls.clear()
    ipu_options(_ipu_config(offload_optimizer=True), fake_poptorch(calls), training=False)
    assert not any("TensorLocation" in p for p, _, _ in calls)  # inference has no optimizer state


def test_compile_only_targets_an_offline_ipu() -> None:
    calls: list = []
    ipu_options(_ipu_config(device="ipu", compile_only=True, offline_target_ipu_version=21), fake_poptorch(calls))
    assert _calls_by_path(calls)["useOfflineIpuTarget"] == ((21,), {})
    calls.clear()
    ipu_options(_ipu_config(device="ipu", compile_only=True), fake_poptorch(calls, hardware_version=2))
    assert _calls_by_path(calls)["useOfflineIpuTarget"] == ((2,), {})  # this machine's IPUs
    with pytest.raises(ValueError, match="--offline-target-ipu-version 2 .Mk2. or 21"):
        ipu_options(_ipu_config(device="ipu", compile_only=True), fake_poptorch([], hardware_version=-1))


def test_fp_exceptions_and_synthetic_data() -> None:
    calls: list = []
    ipu_options(_ipu_config(enable_fp_exceptions=True, data="generated"), fake_poptorch(calls))
    got = _calls_by_path(calls)
    assert got["Precision.enableFloatingPointExceptions"] == ((True,), {})
    assert "enableSyntheticData" not in got  # host data for anything but --data synthetic
    calls.clear()
    ipu_options(_ipu_config(), fake_poptorch(calls), training=True)
    assert _calls_by_path(calls)["enableSyntheticData"] == ((True,), {})


# -- validation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    (IpuSettings(pipeline_splits=("a", "b"), available_memory_proportion=(0.1, 0.2)),
     r"one value, or one per pipeline stage \(3 stages from 2 --pipeline-splits\), got 2"),
    (IpuSettings(available_memory_proportion=(1.5,)), r"must be in \(0, 1\], got 1.5"),
    (IpuSettings(num_io_tiles=33), "0 .no I/O overlap. or an even number from 32 to 192, got 33"),
    (IpuSettings(num_io_tiles=16), "got 16"),
    (IpuSettings(offline_target_ipu_version=3), "must be one of 1, 2, 21"),
    (IpuSettings(exchange_memory_target="speed"), "cycles, balanced, memory"),
    (IpuSettings(pipeline_splits=("layer2", "layer2")), "names a module twice"),
])
def test_bad_ipu_settings_are_one_line_errors(settings: IpuSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        check_ipu_settings(settings)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--pipeline-splits", "layer2", "layer3", "--available-memory-proportion", "0.1", "0.2"],
     "one per pipeline stage"),
    (["--recompute-checkpoints", "layer4"], "add --recompute-mode auto or manual"),
    (["--offline-target-ipu-version", "2"], "is the target of --compile-only"),
    (["--compile-only"], "--compile-only needs --device ipu"),
    (["--profile"], "--profile needs --device ipu"),
    (["--initial-loss-scaling", "16"], "give the final scale with --loss-scaling"),
    (["--initial-loss-scaling", "256", "--loss-scaling", "128"], "at most --loss-scaling"),
    (["--initial-loss-scaling", "16", "--loss-scaling", "128", "--precision", "16.16", "--auto-loss-scaling"],
     "drop one of them"),
    (["--num-io-tiles", "31"], "even number from 32 to 192"),
])
def test_bad_flag_combinations_are_refused_when_parsed(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        parse_config(["--data", "synthetic", "--device", "cpu", *argv])


def test_help_lists_the_ipu_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    text = capsys.readouterr().out
    for flag in ("--pipeline-splits", "--recompute-checkpoints", "--exchange-memory-target", "--num-io-tiles",
                 "--compile-only", "--offline-target-ipu-version", "--profile", "--offload-optimizer",
                 "--enable-optimizer-rts", "--lr-scheduler-freq", "--initial-loss-scaling", "--enable-fp-exceptions",
                 "--available-memory-proportion"):
        assert flag in text, flag


def test_graphcore_config_values_parse() -> None:
    """The values Graphcore's configs.yml gives these keys (a list of proportions, '/' module names) parse."""
    o = config_from_mapping({"data": "synthetic", "pipeline_splits": ["blocks/1/1/conv_pw", "blocks/3/0/conv_pw",
                                                                      "blocks/4/5/conv_pw"],
                             "available_memory_proportion": [0.15], "exchange_memory_target": "balanced",
                             "lr_scheduler_freq": 0.424, "offload_optimizer": False, "enable_optimizer_rts": False})
    assert ipu_settings(o).memory_proportions() == {f"IPU{i}": 0.15 for i in range(4)}
    assert config_from_mapping({"data": "synthetic", "available_memory_proportion": 0.6}) \
        .available_memory_proportion == [0.6]  # one number, as older records hold it


# -- model annotations -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    return timm.create_model("resnet50", num_classes=10)


def test_graphcore_names_resolve(resnet50: torch.nn.Module) -> None:
    assert resolve_module_name(resnet50, "layer4/0/conv1", "--x") == "layer4.0.conv1"
    assert resolve_module_name(resnet50, "layer4/0/downsample_0", "--x") == "layer4.0.downsample.0"
    # the residual additions in execution order: ResNet-50 has 3 + 4 + 6 + 3 blocks
    assert resolve_module_name(resnet50, "add", "--x") == "layer1.0"
    assert resolve_module_name(resnet50, "add_3", "--x") == "layer2.0"
    assert resolve_module_name(resnet50, "add_13", "--x") == "layer4.0"
    assert resolve_module_name(resnet50, "add_15", "--x") == "layer4.2"
    with pytest.raises(ValueError, match="residual addition 16, but the model has 16 residual blocks"):
        resolve_module_name(resnet50, "add_16", "--x")
    b0 = timm.create_model("efficientnet_b0", num_classes=10)
    assert resolve_module_name(b0, "blocks/3/0/conv_pw", "--x") == "blocks.3.0.conv_pw"
    # Graphcore's mobilenet-v3-large splits: its flat list of 15 bottlenecks is timm's 6 stages flattened
    large = timm.create_model("mobilenetv3_large_100", num_classes=10)
    assert pipeline_stages(large, ["mb_block/2/seq/0", "mb_block/7/seq/0", "mb_block/11/seq/0"]) == \
        ["blocks.1.1", "blocks.3.1", "blocks.4.1"]
    # Graphcore's efficientnet-b4-g16-gn-pod16 split and checkpoints (add_N: the N-th block with a skip)
    b4 = timm.create_model("efficientnet_b4", num_classes=10)
    assert pipeline_stages(b4, ["blocks/3/0/bn2"]) == ["blocks.3.0.bn2"]
    assert recompute_targets(b4, ["add_1", "add_3"]) == ["blocks.1.1", "blocks.1.3"]
    assert pipeline_stages(b4, ["blocks/1/1/conv_pw", "blocks/3/0/conv_pw", "blocks/4/5/conv_pw"]) == \
        ["blocks.1.1.conv_pw", "blocks.3.0.conv_pw", "blocks.4.5.conv_pw"]  # efficientnet-b4-g1-gn-pod16


def test_graphcores_resnet50_recompute_list_resolves(resnet50: torch.nn.Module) -> None:
    """The recomputation checkpoints of Graphcore's resnet50 config (torch.fx names of torchvision's ResNet-50)
    all land on timm's ResNet-50."""
    graphcore = ["add", "add_1", "add_2", "add_3", "add_5", "add_6", "add_7", "add_9", "add_11", "add_12",
                 "layer4/0/conv1", "layer4/0/bn1", "layer4/0/conv2", "layer4/0/bn2", "layer4/0/conv3", "layer4/0/bn3",
                 "layer4/0/downsample_0", "layer4/0/downsample/1", "add_13", "layer4/1/conv1", "layer4/1/bn1",
                 "layer4/1/conv2", "layer4/1/bn2", "layer4/1/conv3", "layer4/1/bn3", "add_14", "layer4/2/conv1",
                 "layer4/2/bn1", "layer4/2/conv2", "layer4/2/bn2", "layer4/2/conv3", "layer4/2/bn3", "add_15",
                 "avgpool", "fc"]
    targets = recompute_targets(resnet50, graphcore)
    assert len(targets) == len(graphcore)
    assert targets[:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"] and targets[-2:] == ["global_pool", "fc"]
    assert "layer4.0.downsample.0" in targets and "layer4.0.downsample.1" in targets


def test_unknown_split_lists_the_valid_names(resnet50: torch.nn.Module) -> None:
    with pytest.raises(ValueError) as info:
        pipeline_stages(resnet50, ["layer3", "layer5"])
    message = str(info.value)
    assert message.startswith("--pipeline-splits: the model has no module 'layer5'")
    assert "its modules are: conv1, bn1, act1, maxpool, layer1, layer1.0" in message and "fc" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="did you mean layer4.0.conv1"):
        pipeline_stages(resnet50, ["layer4.0.convv1"])
    with pytest.raises(ValueError, match="comes before 'layer3'"):
        pipeline_stages(resnet50, ["layer3", "layer2"])
    with pytest.raises(ValueError, match="inside or equal to the split before it"):
        pipeline_stages(resnet50, ["layer3", "layer3.1"])


def test_recompute_targets_take_names_and_regular_expressions(resnet50: torch.nn.Module) -> None:
    assert recompute_targets(resnet50, ["layer4/.*/conv1", "add_13", "fc"]) == \
        ["layer4.0.conv1", "layer4.1.conv1", "layer4.2.conv1", "layer4.0", "fc"]
    with pytest.raises(ValueError, match="--recompute-checkpoints: the model has no module 'layer9.*'"):
        recompute_targets(resnet50, ["layer9.*"])


def test_annotations_begin_blocks_and_checkpoint_outputs() -> None:
    model = timm.create_model("resnet18", num_classes=10)
    calls: list = []
    handles = annotate_for_ipu(model, fake_poptorch(calls), pipeline_splits=["layer2", "layer4/0"],
                               recompute_checkpoints=["layer3.1", "fc"])
    blocks = [(c[1][0], c[2]["ipu_id"]) for c in calls if c[0] == "BeginBlock"]
    assert blocks == [(model.layer2, 1), (model.get_submodule("layer4.0"), 2)]
    calls.clear()
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 32, 32))
    checkpointed = [c[1][0].shape for c in calls if c[0] == "recomputationCheckpoint"]
    assert checkpointed == [torch.Size([2, 256, 2, 2]), logits.shape]  # layer3.1's output, then fc's
    for handle in handles:
        handle.remove()


def test_backend_annotates_the_network_once_before_compiling() -> None:
    calls: list = []
    poptorch = fake_poptorch(calls)
    poptorch.trainingModel = (  # type: ignore[attr-defined]
        lambda model, options, optimizer: calls.append(("trainingModel", (), {})) or model)
    settings = ipu_settings(config_from_mapping({"data": "synthetic", "pipeline_splits": ["layer3"],
                                                 "recompute_mode": "auto", "recompute_checkpoints": ["layer2"]}))
    backend = IpuBackend(settings, eval_batch_size=4, poptorch=poptorch)
    from ipu_cnn.models import NormalizedModel

    model = NormalizedModel(timm.create_model("resnet18", num_classes=10), None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    backend.create_train_step(model, optimizer, torch.nn.functional.cross_entropy)
    backend.create_train_step(model, optimizer, torch.nn.functional.cross_entropy)
    names = [c[0] for c in calls if c[0] in ("BeginBlock", "trainingModel")]
    assert names == ["BeginBlock", "trainingModel", "trainingModel"]  # annotated once, before the first compile
    with pytest.raises(ValueError, match="--pipeline-splits: the model has no module 'layer7'"):
        bad = IpuBackend(ipu_settings(config_from_mapping({"data": "synthetic", "pipeline_splits": ["layer7"]})),
                         eval_batch_size=4, poptorch=poptorch)
        bad.create_train_step(NormalizedModel(timm.create_model("resnet18"), None), optimizer,
                              torch.nn.functional.cross_entropy)


# -- the optimizer pushed only when it changes -------------------------------------------------------------------
class FakeTrainingModel:
    """PopTorch's training model as the step sees it: records ``setOptimizer`` and ``compile``."""

    def __init__(self) -> None:
        self.pushed: list[tuple[float, Any]] = []
        self.compiled: list[tuple[int, ...]] = []

    def setOptimizer(self, optimizer: Any) -> None:  # noqa: N802 - PopTorch's name
        self.pushed.append((optimizer.param_groups[0]["lr"], getattr(optimizer, "loss_scaling", None)))

    def compile(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.compiled.append(tuple(images.shape))

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(images.shape[0], 3), torch.zeros(images.shape[0])


@pytest.mark.parametrize("freq", [0.0, 4.0, 2.5, 0.424, 100.0])
def test_pushes_follow_the_scheduler_frequency(freq: float) -> None:
    steps_per_epoch, epochs = 10, 5
    schedule = LRSchedule("cosine", steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=1,
                          updates_per_epoch=freq)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = create_scheduler(optimizer, schedule)
    model = FakeTrainingModel()
    step = IpuTrainStep(model, optimizer, None, None)
    total = steps_per_epoch * epochs
    for _ in range(total):
        step(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        optimizer.step()  # PopTorch steps on the device; this keeps LambdaLR's order check quiet
        scheduler.step()
    # closed form: a push before step s exactly when the schedule's value differs from step s - 1's
    expected = sum(1 for s in range(1, total) if schedule.factor(s) != schedule.factor(s - 1))
    assert step.pushes == len(model.pushed) == expected
    assert [lr for lr, _ in model.pushed] == pytest.approx(
        [schedule.factor(s) for s in range(1, total) if schedule.factor(s) != schedule.factor(s - 1)])
    if freq == 0.0 or freq >= steps_per_epoch:
        assert expected == total - 2  # every step but one: the warm-up's last value equals the cosine's first
    else:
        assert expected <= math.ceil(freq * epochs)


def test_loss_scale_change_is_pushed_once_with_velocity_scaling_for_combined_sgd() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    optimizer.loss_scaling = 16.0  # type: ignore[attr-defined]
    model = FakeTrainingModel()
    step = IpuTrainStep(model, optimizer, None, None, combined_velocity=True)
    batch = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    step(*batch)
    step.set_loss_scale(32.0)
    step(*batch)
    step(*batch)
    assert model.pushed == [(0.5, 32.0)]
    assert optimizer.param_groups[0]["velocity_scaling"] == 32.0
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    IpuTrainStep(FakeTrainingModel(), plain, None, None).set_loss_scale(8.0)
    assert "velocity_scaling" not in plain.param_groups[0]


def test_compile_only_compiles_without_running() -> None:
    model = FakeTrainingModel()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    IpuTrainStep(model, optimizer, None, None).compile(torch.zeros(6, 3, 8, 8), torch.zeros(6, dtype=torch.long))
    assert model.compiled == [(6, 3, 8, 8)] and model.pushed == []


# -- CPU/CUDA ----------------------------------------------------------------------------------------------------
def test_ipu_only_options_are_ignored_off_ipu_with_one_line_each() -> None:
    options = config_from_mapping({"data": "synthetic", "pipeline_splits": ["layer3"], "num_io_tiles": 32,
                                   "available_memory_proportion": [0.2], "offload_optimizer": True})
    lines = ignored_ipu_options(options, "cpu")
    assert [line.split()[0] for line in lines] == ["--pipeline-splits", "--available-memory-proportion",
                                                   "--num-io-tiles", "--offload-optimizer"]
    assert all("ignored on cpu: " in line and "\n" not in line for line in lines)
    assert ignored_ipu_options(options, "ipu") == []
    assert ignored_ipu_options(config_from_mapping({"data": "synthetic"}), "cuda") == []


def test_fp_exceptions_on_cpu_stop_at_the_first_nan_gradient() -> None:
    from ipu_cnn.backends.precision import floating_point_checks

    x = torch.tensor([-1.0], requires_grad=True)
    with floating_point_checks(True, "cpu"), pytest.raises(RuntimeError, match="'SqrtBackward0' returned nan"), \
            pytest.warns(UserWarning, match="Error detected in SqrtBackward0"):  # the forward op's stack
        torch.sqrt(x).sum().backward()
    assert not torch.is_anomaly_enabled()  # switched off again after the run
    y = torch.tensor([-1.0], requires_grad=True)
    with floating_point_checks(False, "cpu"):
        torch.sqrt(y).sum().backward()  # without the flag, NaN gradients pass silently
    assert torch.isnan(y.grad).all()


def test_cpu_loss_scale_ramp_leaves_the_gradient_unchanged() -> None:
    from ipu_cnn.backends import create_backend

    backend = create_backend("cpu", DistContext(), precision="32.32", loss_scaling=128.0)
    grads = []
    for scale in (1.0, 16.0, 128.0):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        step = backend.create_train_step(model, optimizer, torch.nn.functional.cross_entropy)
        step.set_loss_scale(scale)
        assert step.static_scale == (None if scale == 1.0 else scale)
        # keep the gradient: run the step's maths up to the optimizer (lr 0 leaves the weights alone)
        optimizer.zero_grad = lambda set_to_none=True: None  # type: ignore[method-assign]
        step(torch.ones(2, 4), torch.tensor([0, 2]))
        grads.append(model.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1]) and torch.allclose(grads[0], grads[2])


# -- poprun ------------------------------------------------------------------------------------------------------
class ThreadedHorovod:
    """Horovod's ``allreduce`` / ``allgather`` for N instances simulated by N threads (one stand-in per thread)."""

    Sum = "Sum"

    def __init__(self, world: int) -> None:
        self.world = world
        self.slots: list[Any] = [None] * world
        self.barrier = threading.Barrier(world)

    def for_rank(self, rank: int) -> types.SimpleNamespace:
        def exchange(tensor: torch.Tensor, combine: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            out = combine(list(self.slots))
            self.barrier.wait()
            return out

        return types.SimpleNamespace(
            Sum=self.Sum,
            allreduce=lambda t, op: exchange(t, lambda ts: torch.stack(ts).sum(0)),
            allgather=lambda t: exchange(t, lambda ts: torch.cat(ts)))


def _run_instances(world: int, body: Callable[[DistContext], Any]) -> list[Any]:
    hvd = ThreadedHorovod(world)
    results: list[Any] = [None] * world
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            results[rank] = body(DistContext(rank, world, 0, "poprun", None, hvd=hvd.for_rank(rank)))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
            hvd.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_poprun_gathers_every_instances_objects() -> None:
    def body(dist: DistContext) -> Any:
        # objects of different sizes per instance, as RNG states and inference timings are
        gathered = dist.gather_objects({"rank": dist.rank, "payload": list(range(dist.rank * 50))})
        summed = dist.all_reduce_sum(torch.tensor([1.0, float(dist.rank)], dtype=torch.float64))
        stop = dist.any_flag(dist.rank == 2)
        dist.barrier()
        return gathered, summed.tolist(), stop

    results = _run_instances(3, body)
    for gathered, summed, stop in results:
        assert [g["rank"] for g in gathered] == [0, 1, 2]
        assert [len(g["payload"]) for g in gathered] == [0, 50, 100]
        assert summed == [3.0, 3.0] and stop is True


def test_inference_figures_are_reduced_over_instances() -> None:
    from ipu_cnn.inference.stats import Timings, summarize

    def body(dist: DistContext) -> Any:
        timings = Timings()
        for _ in range(4):
            timings.add(8, 0.01 * (dist.rank + 1), 0.005 * (dist.rank + 1))
        return summarize(dist.gather_objects(timings))

    figures = _run_instances(2, body)
    assert figures[0].ranks == 2 and figures[0].samples == 2 * 4 * 8
    assert figures[0].latency_max_ms == pytest.approx(10.0)  # the slower instance's latency bounds the figure


def test_poprun_context_takes_popdists_replicas() -> None:
    popdist = types.SimpleNamespace(getNumInstances=lambda: 4, getInstanceIndex=lambda: 2,
                                    getNumLocalReplicas=lambda: 4, getNumTotalReplicas=lambda: 16)
    dist = poprun_context(popdist, hvd=object())
    assert (dist.rank, dist.world_size, dist.launcher, dist.local_replicas, dist.total_replicas) == \
        (2, 4, "poprun", 4, 16)
    assert not dist.is_main
    with pytest.raises(RuntimeError, match="needs horovod"):
        poprun_context(popdist, hvd=None)
    assert HOROVOD_MISSING.startswith("reducing and gathering across poprun instances needs horovod")
    options = config_from_mapping({"data": "synthetic", "replicas": 64, "micro_batch_size": 2,
                                   "gradient_accumulation": 3})
    batches = plan_batches(options, "ipu", dist.world_size, local_replicas=dist.local_replicas)
    assert batches.device_replicas == 4 and batches.loader_batch_size == 2 * 3 * 4
    assert batches.global_batch_size == 2 * 3 * 4 * 4
    note = popdist_replica_note(64, dist)
    assert note is not None and "poprun runs 16 replicas (4 per instance x 4 instances)" in note
    assert popdist_replica_note(16, dist) is None


def test_popdist_options_get_ipus_per_replica_in_the_backend() -> None:
    calls: list = []
    popdist = types.SimpleNamespace(poptorch=types.SimpleNamespace(
        Options=lambda **kwargs: calls.append(("popdist.Options", (), kwargs)) or Recorder(calls, "Options()")))
    poptorch = fake_poptorch(calls)
    poptorch.inferenceModel = lambda model, options: (lambda images: torch.zeros(images.shape[0], 5))  # type: ignore
    settings = IpuSettings(pipeline_splits=("layer3", "layer4"))
    backend = IpuBackend(settings, DistContext(0, 2, 0, "poprun"), eval_batch_size=4, poptorch=poptorch,
                         popdist=popdist)  # type: ignore[arg-type]
    assert backend.data_shard() == (0, 2)
    model = timm.create_model("resnet18", num_classes=5)
    backend.predict(model, torch.zeros(3, 3, 8, 8))
    assert ("popdist.Options", (), {"ipus_per_replica": 3}) in calls
    # evaluation on its own (validate, inference) places the same stages as training would
    assert [(c[1][0], c[2]["ipu_id"]) for c in calls if c[0] == "BeginBlock"] == [(model.layer3, 1), (model.layer4, 2)]


def test_cpu_run_with_the_graphcore_schedule_and_ipu_flags(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """A CPU run given Graphcore's flags: the loss scale ramps per epoch, the rate changes once per epoch, the IPU
    options are each ignored with one line."""
    import json

    from test_train_e2e import ColourImages

    from ipu_cnn.batch_sources import HostBatches
    from ipu_cnn.train import train

    config = config_from_mapping({
        "data": "synthetic", "model": "test_resnet", "image_size": 32, "epoch": 3, "micro_batch_size": 16,
        "lr": 0.05, "lr_schedule": "cosine", "lr_scheduler_freq": 1.0, "loss_scaling": 8.0,
        "initial_loss_scaling": 2.0, "pipeline_splits": ["layer3"],
        "recompute_mode": "manual", "recompute_checkpoints": ["layer2"], "exchange_memory_target": "memory",
        "output_dir": str(tmp_path), "run_name": "run", "logs_per_epoch": 3, "progress": "lines", "device": "cpu",
        "validation_mode": "none", "plot": False})
    train(config, loaders=(HostBatches(ColourImages(48, size=32), 16, seed=0), None, 4, ["r", "g", "b", "y"]))
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("loss scaling")] == [
        "loss scaling 2 from epoch 1", "loss scaling 4 from epoch 2", "loss scaling 8 from epoch 3"]
    for flag in ("--pipeline-splits", "--recompute-checkpoints", "--recompute-mode", "--exchange-memory-target"):
        assert f"{flag} ignored on cpu: " in out, flag
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = {}
    for r in records:
        rates.setdefault(math.ceil(r["epoch"]) - 1, set()).add(r["lr"])
    assert [len(v) for _, v in sorted(rates.items())] == [1, 1, 1]  # one rate per epoch
    assert [rates[e].pop() for e in range(3)] == pytest.approx(
        [0.05 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])


# -- the trainer on the IPU path, with PopTorch replaced by a stand-in that runs the model on the CPU -------------
class _Compiled:
    """What ``poptorch.trainingModel`` / ``inferenceModel`` return, running the wrapped model on the CPU (forward
    only: the device would do the update) and recording the host-side calls."""

    def __init__(self, model: torch.nn.Module, calls: list) -> None:
        self.model, self.calls = model, calls

    def __call__(self, *args: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.model(*args)

    def setOptimizer(self, optimizer: Any) -> None:  # noqa: N802 - PopTorch's names
        self.calls.append(("setOptimizer", optimizer.param_groups[0]["lr"], optimizer.loss_scaling))

    def compile(self, *args: torch.Tensor) -> None:
        self.calls.append(("compile", tuple(args[0].shape)))

    def copyWeightsToHost(self) -> None:  # noqa: N802
        pass

    def copyWeightsToDevice(self) -> None:  # noqa: N802
        pass

    def detachFromDevice(self) -> None:  # noqa: N802
        pass


def _poptorch_sdk(calls: list) -> types.ModuleType:
    module = fake_poptorch(calls)

    class SGD(torch.optim.SGD):
        def __init__(self, params: Any, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                     loss_scaling: float = 1.0, **_state_types: Any) -> None:
            super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
            self.loss_scaling = loss_scaling

    module.optim = types.SimpleNamespace(SGD=SGD)  # type: ignore[attr-defined]
    module.trainingModel = lambda model, options, optimizer: _Compiled(model, calls)  # type: ignore[attr-defined]
    module.inferenceModel = lambda model, options: _Compiled(model, calls)  # type: ignore[attr-defined]
    module.identity_loss = lambda loss, reduction: loss  # type: ignore[attr-defined]
    return module


def _ipu_run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> tuple[dict, list]:
    import sys

    from ipu_cnn.train import train

    calls: list = []
    monkeypatch.setitem(sys.modules, "poptorch", _poptorch_sdk(calls))
    config = config_from_mapping({
        "data": "synthetic", "device": "ipu", "model": "test_resnet", "image_size": 32, "num_classes": 4,
        "micro_batch_size": 4, "generated_samples": 64, "epoch": 2, "lr": 0.1, "lr_schedule": "cosine",
        "output_dir": str(tmp_path), "run_name": "run", "progress": "lines", "plot": False, **overrides})
    return train(config), calls


def test_trainer_on_ipus_pushes_the_optimizer_only_when_it_changes(tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    summary, calls = _ipu_run(tmp_path, monkeypatch, lr_scheduler_freq=4.0, loss_scaling=4.0,
                              initial_loss_scaling=2.0, pipeline_splits=["layer3"],
                              available_memory_proportion=[0.2, 0.3])
    assert summary["step"] == 32 and summary["checkpoint"]
    # 16 steps per epoch, 4 updates per epoch: new rates before steps 4, 8, ..., 28; the loss scale doubles at
    # epoch 2 (step 16), in the same push as that step's rate
    schedule = LRSchedule("cosine", steps_per_epoch=16, epochs=2, updates_per_epoch=4.0)
    pushes = [c[1:] for c in calls if c[0] == "setOptimizer"]
    assert pushes == [(pytest.approx(0.1 * schedule.factor(s)), 2.0 if s < 16 else 4.0) for s in range(4, 32, 4)]
    by_path = {p: a for p, a, _ in calls}
    assert by_path["Options().enableSyntheticData"] == (True,)  # --data synthetic: made on the device
    assert by_path["Options().setAvailableMemoryProportion"] == ({"IPU0": 0.2, "IPU1": 0.3},)
    assert [c[2]["ipu_id"] for c in calls if c[0] == "BeginBlock"] == [1]


def test_trainer_compile_only_compiles_and_ends(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    summary, calls = _ipu_run(tmp_path, monkeypatch, compile_only=True, offline_target_ipu_version=2)
    assert summary["compiled"] and summary["step"] == 0
    assert [c for c in calls if c[0] in ("compile", "setOptimizer")] == [("compile", (4, 3, 32, 32))]
    assert ("Options().useOfflineIpuTarget", (2,), {}) in calls
    assert "not kept: add --executable-cache-dir" in capsys.readouterr().out


def test_init_distributed_under_poprun_reads_popdist(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from ipu_cnn.backends import init_distributed

    inited: list[str] = []
    popdist = types.ModuleType("popdist")
    popdist.isPopdistEnvSet = lambda: True  # type: ignore[attr-defined]
    popdist.init = lambda: inited.append("popdist")  # type: ignore[attr-defined]
    popdist.getNumInstances = lambda: 2  # type: ignore[attr-defined]
    popdist.getInstanceIndex = lambda: 1  # type: ignore[attr-defined]
    popdist.getNumLocalReplicas = lambda: 8  # type: ignore[attr-defined]
    popdist.getNumTotalReplicas = lambda: 16  # type: ignore[attr-defined]
    hvd = types.ModuleType("horovod.torch")
    hvd.init = lambda: inited.append("horovod")  # type: ignore[attr-defined]
    horovod = types.ModuleType("horovod")
    horovod.torch = hvd  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "popdist", popdist)
    monkeypatch.setitem(sys.modules, "horovod", horovod)
    monkeypatch.setitem(sys.modules, "horovod.torch", hvd)
    monkeypatch.setenv("POPDIST_NUM_INSTANCES", "2")
    dist = init_distributed("ipu")
    assert inited == ["popdist", "horovod"]
    assert (dist.rank, dist.world_size, dist.launcher, dist.local_replicas, dist.total_replicas) == \
        (1, 2, "poprun", 8, 16)
    assert dist.hvd is hvd and dist.uses_horovod
    assert init_distributed("cpu").launcher == "none"  # popdist is for IPU runs only
    monkeypatch.setitem(sys.modules, "horovod.torch", None)  # horovod missing with two instances: said at start
    with pytest.raises(RuntimeError, match="needs horovod"):
        init_distributed("ipu")
