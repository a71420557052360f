"""A new user's first commands: the source checkout finds the installed core, the printed resume hint resumes, --help
shows the defaults in force, Graphcore's spellings are accepted, and the final checkpoint is written once."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ipu_cnn
from conftest import subprocess_env

from ipu_cnn._core import source_digest
from ipu_cnn.train.checkpoint import list_checkpoints, load_checkpoint
from ipu_cnn.train.config import build_parser, parse_config

REPO = Path(__file__).resolve().parents[1]

# -- the compiled core from a source checkout -------------------------------------------------------------------------


def _fake_layout(tmp_path: Path, with_installed: bool) -> tuple[Path, Path]:
    """A "checkout" (Python sources only, plus csrc/) and an "installed" copy (sources + the compiled core)."""
    package = Path(ipu_cnn.__file__).parent
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd")
    checkout = tmp_path / "checkout"
    shutil.copytree(package, checkout / "ipu_cnn", ignore=ignore)
    shutil.copytree(REPO / "csrc", checkout / "csrc")
    site = tmp_path / "site"
    if with_installed:
        shutil.copytree(package, site / "ipu_cnn", ignore=ignore)
        core = Path(ipu_cnn._C.__file__)
        shutil.copy2(core, site / "ipu_cnn" / core.name)
    else:
        site.mkdir()
    return checkout, site


def _run_in(checkout: Path, site: Path, code: str, *flags: str) -> subprocess.CompletedProcess:
    """`python -c code` as `python -m` would run in the checkout's root: the checkout first on sys.path, then `site`
    (standing for site-packages)."""
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, *flags, "-c", f"import sys; sys.path.insert(0, ''); {code}"], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_source_checkout_uses_the_installed_core(tmp_path: Path) -> None:
    checkout, site = _fake_layout(tmp_path, with_installed=True)
    code = ("import ipu_cnn, ipu_cnn.data as d, numpy as np; from ipu_cnn import _C; "
            "print(ipu_cnn.__file__); print(_C.__file__); print(d.decode_image(sys.argv[1]).shape)")
    res = _run_in(checkout, site, code.replace("sys.argv[1]", repr(str(_a_jpeg(tmp_path)))))
    assert res.returncode == 0, res.stderr
    package_file, core_file, shape = res.stdout.splitlines()
    assert Path(package_file).parent == checkout / "ipu_cnn", "the checkout's Python code runs"
    assert Path(core_file).parent == site / "ipu_cnn", "with the installed compiled core"
    assert shape == "(40, 60, 3)"
    if ipu_cnn._C.source_digest() == source_digest(REPO / "csrc"):
        assert "RuntimeWarning" not in res.stderr, "built from the same sources: nothing to say"


def test_source_checkout_says_when_the_installed_core_is_stale(tmp_path: Path) -> None:
    checkout, site = _fake_layout(tmp_path, with_installed=True)
    with open(checkout / "csrc" / "crop.cpp", "a") as f:
        f.write("\n// changed since the install\n")
    res = _run_in(checkout, site, "import ipu_cnn._C")
    assert res.returncode == 0, res.stderr
    assert "built from other C++ sources than this checkout's csrc/" in res.stderr
    assert "pip install ." in res.stderr


def test_without_any_core_the_error_says_how_to_build_it(tmp_path: Path) -> None:
    checkout, site = _fake_layout(tmp_path, with_installed=False)
    res = _run_in(checkout, site, "from ipu_cnn import _C", "-S")  # -S: not even the real site-packages
    assert res.returncode != 0
    assert "ImportError" in res.stderr and "Run `pip install .` in the repository root" in res.stderr
    assert "libjpeg62-turbo-dev" in res.stderr


def test_version_without_any_core_reports_instead_of_failing(tmp_path: Path) -> None:
    """`python -m ipu_cnn --version` in a checkout before `pip install .` (what a new user may type first, and what a
    bug report asks for): the facts it can give and how to build the core, no traceback, success (the report is the
    answer)."""
    checkout, site = _fake_layout(tmp_path, with_installed=False)
    res = _version_in(checkout, site)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = {k.strip(): v.strip() for k, v in (line.split(" : ", 1) for line in res.stdout.splitlines())}
    assert lines["ipu_cnn"] == ipu_cnn.__version__ and lines["python"] == sys.version.split()[0]
    assert lines["resampler_simd"] == "None"
    assert "not loadable" in lines["core"] and "Run `pip install .` in the repository root" in lines["core"]


def _version_in(checkout: Path, site: Path) -> subprocess.CompletedProcess:
    """`python -m ipu_cnn --version` typed in the checkout's root, with no site-packages but `site`."""
    return _run_in(checkout, site, "import runpy; sys.argv = ['ipu_cnn', '--version']; "
                   "runpy.run_module('ipu_cnn', run_name='__main__')", "-S")


def test_without_the_checkouts_venv_active_the_report_says_to_activate_it(tmp_path: Path) -> None:
    """The README builds the core into the checkout's `.venv`; typed with another Python (`python3` before
    `. .venv/bin/activate`), `--version` and the import error point at that environment instead of at a rebuild."""
    checkout, site = _fake_layout(tmp_path, with_installed=False)
    venv = checkout / ".venv"
    package = venv / "lib" / "python3.11" / "site-packages" / "ipu_cnn"
    package.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (package / "_C.pyi").write_text("")  # the stub beside the core is not the core
    assert "activate" not in _version_in(checkout, site).stdout  # a .venv without a built core: build it
    core = package / Path(ipu_cnn._C.__file__).name
    core.write_bytes(b"")
    res = _version_in(checkout, site)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    core_line = next(line for line in res.stdout.splitlines() if line.startswith("core "))
    assert f"has one ({core})" in core_line and "`. .venv/bin/activate`" in core_line
    assert "Run `pip install .`" not in core_line
    res = _run_in(checkout, site, "from ipu_cnn import _C", "-S")
    assert res.returncode != 0 and "`. .venv/bin/activate`" in res.stderr


def test_digest_matches_the_build() -> None:
    """The digest the build recorded equals the one computed from csrc/ (when the core was built from this tree)."""
    built = ipu_cnn._C.source_digest()
    assert re.fullmatch(r"[0-9a-f]{64}", built)
    ours = source_digest(REPO / "csrc")
    if built != ours:
        pytest.skip("the compiled core in use was built from another tree (e.g. an installed older copy)")
    assert built == ours


def _a_jpeg(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(path, quality=90)
    return path


# -- resume from the printed hint -------------------------------------------------------------------------------------

FIRST = ["--data", "generated", "--model", "test_resnet", "--image-size", "32", "--num-classes", "4",
         "--generated-samples", "64", "--micro-batch-size", "8", "--epoch", "2", "--max-steps", "3", "--progress",
         "lines", "--no-plot", "--validation-mode", "none"]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "ipu_cnn.train", *args], cwd=cwd,
                         env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _hint(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("continue with: ")]
    assert len(lines) == 1, stdout
    argv = shlex.split(lines[0][len("continue with: "):])
    assert argv[:3] == ["python", "-m", "ipu_cnn.train"], argv
    return argv[3:]


@pytest.mark.slow
def test_every_printed_resume_hint_resumes_the_run(tmp_path: Path) -> None:
    first = _train(FIRST, tmp_path)
    hint = _hint(first.stdout)
    start = load_checkpoint(list_checkpoints(Path(hint[-1]))[-1])
    assert start["step"] == 3
    # run the hint exactly as printed, from another folder
    (tmp_path / "elsewhere").mkdir()
    second = _train(hint, tmp_path / "elsewhere")
    assert "resumed from" in second.stdout and "step 3" in second.stdout
    assert "continue with:" not in second.stdout, "it ran to the end of the run's 2 epochs"
    final = load_checkpoint(list_checkpoints(Path(hint[-1]))[-1])
    assert final["step"] == 16 and final["epoch"] == 2, "the step counter went on to the end of the same run"
    for key in ("model", "data", "generated_samples", "image_size", "micro_batch_size", "epoch", "num_classes",
                "lr", "output_dir"):
        assert final["options"][key] == start["options"][key], key
    assert final["model_name"] == start["model_name"] and final["num_classes"] == 4
    summary = json.loads((Path(hint[-1]).parent / "summary.json").read_text())
    assert summary["step"] == 16 and not summary["stopped"]


def test_resume_takes_options_from_the_checkpoint_and_flags_override(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from ipu_cnn.train.__main__ import main

    assert main([*FIRST, "--output-dir", str(tmp_path), "--run-name", "r", "--lr", "0.05"]) == 0
    ckpt_dir = tmp_path / "r" / "checkpoints"
    capsys.readouterr()
    config = parse_config(["--resume", str(ckpt_dir)])
    assert config.model == "test_resnet" and config.data == "generated" and config.image_size == 32
    assert config.lr == 0.05 and config.epoch == 2 and config.max_steps is None
    assert config.resume == str(list_checkpoints(ckpt_dir)[-1])
    assert "changed on the command line" not in capsys.readouterr().out
    config = parse_config(["--resume", str(ckpt_dir), "--epoch", "5"])
    assert config.epoch == 5 and config.model == "test_resnet"
    assert "changed on the command line: epoch 2 -> 5" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such file or folder"):
        parse_config(["--resume", str(tmp_path / "missing")])


# -- --help shows the defaults in force -------------------------------------------------------------------------------

def _help_defaults(argv: list[str]) -> dict[str, str]:
    """dest -> the "(default: X)" text --help prints for it."""
    parser = build_parser()
    text = _help_text(argv)
    found = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config") or action.help is None:
            continue
        flag = action.option_strings[0]
        m = re.search(rf"^  {re.escape(flag)}[ ,\n].*?\n(?=  \S|\n|\Z)", text, re.S | re.M)
        assert m, f"{flag}: not in --help"
        shown = re.findall(r"\(default: ([^()]*)\)", " ".join(m.group(0).split()))
        assert shown, f"{flag}: no default shown"
        found[action.dest] = shown[-1]  # argparse appends its "(default: X)" last
    return found


def _help_text(argv: list[str]) -> str:
    res = subprocess.run([sys.executable, "-m", "ipu_cnn.train", *argv, "--help"], env=subprocess_env(COLUMNS="2000"),
                         capture_output=True, text=True, timeout=300, check=False, cwd=REPO.parent)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("argv", [["--data", "generated"], ["--config", "resnet50", "--data-path", "/imagenet"],
                                  ["--config", "demo"]])
def test_help_defaults_are_the_parsed_defaults(argv: list[str]) -> None:
    shown = _help_defaults(argv)
    parsed = parse_config(argv)
    given = {a.lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for dest, text in shown.items():
        if dest in given:
            continue
        value = getattr(parsed, dest)
        if dest == "eight_bit_io" and text == "None":
            continue  # shown as None: decided by --normalization-location (checked below)
        assert text == str(value), (dest, text, value)


def test_help_names_the_config_that_applies_without_one() -> None:
    text = " ".join(_help_text([]).split())
    assert "Without --config, --data demo (the default) applies the demo config" in text
    assert "lr=0.2" in text, "the demo config's values are listed"
    assert "--lr LR peak learning rate (see --lr-reference-batch) (default: 0.1)" in text


# -- Graphcore's spellings --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("location, expected, eight_bit", [("ipu", "device", True), ("device", "device", True),
                                                           ("host", "host", False), ("none", "none", True)])
def test_normalization_location_spellings(location: str, expected: str, eight_bit: bool) -> None:
    config = parse_config(["--data", "synthetic", "--normalization-location", location])
    assert config.normalization_location == expected and config.eight_bit_io is eight_bit


def test_host_normalisation_with_explicit_eight_bit_io_names_both_flags() -> None:
    with pytest.raises(SystemExit, match="--eight-bit-io and --normalization-location host"):
        parse_config(["--data", "synthetic", "--normalization-location", "host", "--eight-bit-io"])


def test_dataloader_worker_spelled_the_same_in_both_applications() -> None:
    from ipu_cnn.inference.config import parse_options

    for flag in ("--dataloader-worker", "--dataloader-workers"):
        assert parse_config(["--data", "synthetic", flag, "3"]).dataloader_worker == 3
        assert parse_options(["--random-weights", flag, "3"]).dataloader_worker == 3


def test_normalization_none_scales_to_unit_range_without_mean_and_std(tmp_path: Path) -> None:
    import torch

    from ipu_cnn.train.__main__ import main

    assert main([*FIRST, "--output-dir", str(tmp_path), "--run-name", "n", "--normalization-location", "none",
                 "--max-steps", "1"]) == 0
    state = load_checkpoint(list_checkpoints(tmp_path / "n" / "checkpoints")[-1])
    assert state["eval"]["mean"] == [0.0, 0.0, 0.0] and state["eval"]["std"] == [1.0, 1.0, 1.0]
    from ipu_cnn.models import InputNormalizer

    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    y = InputNormalizer(state["eval"]["mean"], state["eval"]["std"])(x)
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 0.2, 1.0]))


# -- the final checkpoint, once ---------------------------------------------------------------------------------------

def test_validation_after_writes_the_final_checkpoint_once(tmp_path: Path) -> None:
    from ipu_cnn.train.__main__ import main

    args = [a for a in FIRST if a not in ("--max-steps", "3")]
    args[args.index("--validation-mode") + 1] = "after"
    args[args.index("--epoch") + 1] = "1"
    assert main([*args, "--output-dir", str(tmp_path), "--run-name", "v"]) == 0
    finals = [p for p in list_checkpoints(tmp_path / "v" / "checkpoints") if p.name.endswith("-final.pt")]
    assert len(finals) == 1, finals
    assert load_checkpoint(finals[0])["metrics"]["count"] > 0, "it holds the validation it was written after"

