"""The IPU options the inference application shares with training (declared once in `ipu_cnn._cli`): parsed into
`InferenceOptions`, mapped into `IpuSettings` and ``poptorch.Options`` for ``inferenceModel`` (checked against the
recording PopTorch stand-in of `test_backends`), validated with training's one-line errors, ignored or refused off
IPU as training does, and ``--compile-only`` compiling the benchmark's executable without running it."""
from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from test_backends import _calls_by_path, fake_poptorch
from test_ipu_backend import _popart, _poptorch_sdk

from ipu_cnn.backends import ignored_ipu_options, ipu_options
from ipu_cnn.inference.config import build_parser, options_for, parse_options
from ipu_cnn.inference.runner import create_runner, ipu_settings

SHARED = ("--pipeline-splits", "--available-memory-proportion", "--exchange-memory-target", "--num-io-tiles",
          "--compile-only", "--offline-target-ipu-version", "--profile", "--executable-cache-dir")
TRAINING_ONLY = ("--recompute-checkpoints", "--recompute-mode", "--offload-optimizer", "--enable-optimizer-rts",
                 "--enable-fp-exceptions")


def _options(*argv: str) -> Any:
    return parse_options(["--device", "ipu", *argv])


def test_each_option_reaches_the_inference_poptorch_options() -> None:
    options = _options("--pipeline-splits", "layer3", "layer4", "--available-memory-proportion", "0.1", "0.2", "0.3",
                       "--exchange-memory-target", "balanced", "--num-io-tiles", "64", "--compile-only",
                       "--offline-target-ipu-version", "21", "--profile", "/tmp/report")
    settings = ipu_settings(options)
    assert settings.pipeline_splits == ("layer3", "layer4") and settings.stages == 3
    assert (settings.exchange_memory_target, settings.num_io_tiles) == ("balanced", 64)
    assert (settings.compile_only, settings.offline_target_ipu_version, settings.profile_dir) == (True, 21,
                                                                                                   "/tmp/report")
    calls: list = []
    ipu_options(settings, fake_poptorch(calls), training=False)
    got = _calls_by_path(calls)
    assert got["setAvailableMemoryProportion"] == (({"IPU0": 0.1, "IPU1": 0.2, "IPU2": 0.3},), {})
    assert got["TensorLocations.numIOTiles"] == ((64,), {})
    assert got["useOfflineIpuTarget"] == ((21,), {})
    engine = _popart(calls)["engineOptions"]
    assert engine["opt.internalExchangeOptimisationTarget"] == "balanced"
    assert engine["autoReport.directory"] == "/tmp/report"
    assert not any("Training" in path or "Recomputation" in str(args) for path, args, _ in calls)


def test_defaults_add_nothing_and_profile_without_a_folder_writes_to_profile() -> None:
    calls: list = []
    ipu_options(ipu_settings(_options()), fake_poptorch(calls), training=False)
    got = _calls_by_path(calls)
    assert "engineOptions" not in _popart(calls) and "useOfflineIpuTarget" not in got
    assert "setAvailableMemoryProportion" not in got and "TensorLocations.numIOTiles" not in got
    assert ipu_settings(_options("--profile")).profile_dir == "profile"
    one = ipu_settings(_options("--pipeline-splits", "layer3", "--available-memory-proportion", "0.25"))
    assert one.memory_proportions() == {"IPU0": 0.25, "IPU1": 0.25}  # one value for every stage


def test_options_come_from_a_config_file_too(tmp_path: Any) -> None:
    config = tmp_path / "ipu.yaml"
    config.write_text("device: ipu\npipeline_splits: [layer3]\nnum_io_tiles: 32\nexchange_memory_target: memory\n")
    options = parse_options(["--config", str(config)])
    assert (options.pipeline_splits, options.num_io_tiles, options.exchange_memory_target) == (["layer3"], 32,
                                                                                                "memory")


@pytest.mark.parametrize("argv, message", [
    (["--pipeline-splits", "layer2", "layer3", "--available-memory-proportion", "0.1", "0.2"],
     r"one value, or one per pipeline stage \(3 stages from 2 --pipeline-splits\), got 2"),
    (["--available-memory-proportion", "1.5"], r"must be in \(0, 1\], got 1.5"),
    (["--pipeline-splits", "layer2", "layer2"], "names a module twice"),
    (["--num-io-tiles", "31"], "0 .no I/O overlap. or an even number from 32 to 192, got 31"),
    (["--offline-target-ipu-version", "2"], "is the target of --compile-only"),
    (["--device", "cpu", "--compile-only"], r"--compile-only needs --device ipu \(cpu here\)"),
    (["--device", "auto", "--profile"], r"--profile needs --device ipu \(auto here\)"),
])
def test_bad_values_are_training_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message) as info:
        parse_options(["--device", "ipu", *argv])
    assert "\n" not in str(info.value.code)


def test_predict_refuses_compile_only_and_export_refuses_the_ipu() -> None:
    with pytest.raises(SystemExit, match="compiles the benchmark's executable"):
        parse_options(["predict", "x.jpg", "--device", "ipu", "--compile-only"])
    with pytest.raises(SystemExit, match="--profile needs --device ipu"):
        parse_options(["export", "m.onnx", "--profile"])


def test_argparse_refuses_bad_choices(capsys: pytest.CaptureFixture) -> None:
    for argv in (["--exchange-memory-target", "speed"], ["--offline-target-ipu-version", "3"],
                 ["--num-io-tiles", "-2"]):
        with pytest.raises(SystemExit):
            parse_options(argv)
        assert argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["benchmark", "predict", "export"])
def test_help_lists_the_shared_options_and_not_the_training_ones(mode: str) -> None:
    text = build_parser(mode).format_help()
    for flag in SHARED:
        assert flag in text, flag
    for flag in TRAINING_ONLY:
        assert flag not in text, flag


def test_one_help_text_per_flag_in_both_applications() -> None:
    from ipu_cnn.train.config import build_parser as train_parser

    def helps(parser: Any) -> dict[str, str]:
        return {s: a.help for a in parser._actions for s in a.option_strings if s in SHARED}

    assert helps(build_parser("benchmark")).keys() == set(SHARED)
    shared_help = {k: v for k, v in helps(train_parser()).items() if k != "--executable-cache-dir"}
    assert shared_help == {k: v for k, v in helps(build_parser("benchmark")).items() if k in shared_help}


def test_off_ipu_the_options_are_ignored_with_one_line_each(capsys: pytest.CaptureFixture) -> None:
    import torch

    options = options_for("benchmark", device="cpu", pipeline_splits=["layer3"], available_memory_proportion=[0.2],
                          num_io_tiles=32, exchange_memory_target="cycles")
    lines = ignored_ipu_options(options, "cpu")
    assert [line.split()[0] for line in lines] == ["--pipeline-splits", "--available-memory-proportion",
                                                   "--exchange-memory-target", "--num-io-tiles"]
    assert all(" ignored on cpu: " in line for line in lines)
    assert ignored_ipu_options(options, "ipu") == []
    assert ignored_ipu_options(options_for("benchmark", device="cpu"), "cpu") == []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    runner = create_runner(model, options, 2)
    assert runner(torch.zeros(2, 3, 4, 4)).shape == (2, 5)  # the model runs whole on the CPU
    runner.close()
    assert capsys.readouterr().err.splitlines() == lines


def test_compile_only_compiles_the_benchmark_executable_and_stops(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.benchmark import run_benchmark

    calls: list = []
    monkeypatch.setitem(sys.modules, "poptorch", _poptorch_sdk(calls))
    monkeypatch.delenv("POPTORCH_CACHE_DIR", raising=False)
    options = parse_options(["--device", "ipu", "--model", "resnet18", "--random-weights", "--image-size", "32",
                             "--num-classes", "4", "--micro-batch-size", "2", "--device-iterations", "3",
                             "--data", "synthetic", "--pipeline-splits", "layer3", "--compile-only",
                             "--offline-target-ipu-version", "2"])
    assert run_benchmark(options) is None
    assert [c for c in calls if c[0] == "compile"] == [("compile", (6, 3, 32, 32))]
    by_path = {c[0]: c[1] for c in calls if len(c) == 3}
    assert by_path["Options().useOfflineIpuTarget"] == (2,)
    assert by_path["Options().deviceIterations"] == (3,)
    assert [c[2]["ipu_id"] for c in calls if c[0] == "BeginBlock"] == [1]  # the forward pass pipelined
    out = capsys.readouterr().out
    assert "compiled the inference executable for host batch 6 x 3 x 32 x 32" in out
    assert "not kept: add --executable-cache-dir" in out and "throughput" not in out.lower()
    assert "compile only" in out and "measured iterations" not in out


def test_the_docs_inference_table_matches_the_inference_help() -> None:
    from test_graphcore_configs import _doc_rows

    rows = _doc_rows("Inference")
    documented = {option for options, _ in rows for option in options}
    assert set(SHARED) - {"--executable-cache-dir"} | set(TRAINING_ONLY) <= documented
    help_text = build_parser("benchmark").format_help()
    for options, verdict in rows:
        if verdict.startswith("renamed to"):
            assert re.search(r"`(--[a-z-]+)`", verdict).group(1) in help_text  # type: ignore[union-attr]
        elif verdict.startswith("same"):
            for option in options:
                assert re.search(rf"{re.escape(option)}\b", help_text), option
        else:
            assert verdict.startswith("not applicable here, because "), (options, verdict)
            for option in options:
                assert not re.search(rf"{re.escape(option)}\b", help_text), option


def test_export_says_it_ignores_the_ipu_options(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.inference.export import run_export

    options = options_for("export", output=str(tmp_path / "model.pt"), model="resnet18", random_weights=True,
                          image_size=32, num_classes=4, check=False, device="cpu", pipeline_splits=["layer3"])
    run_export(options)
    assert (tmp_path / "model.pt").is_file()
    err = capsys.readouterr().err
    assert "--pipeline-splits ignored on cpu: " in err
