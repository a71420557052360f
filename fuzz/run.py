"""Run the fuzz targets one after another for a fixed time each, then print executions, coverage and findings.

    python fuzz/run.py --seconds 25 --asan                 # the CI run (.ci/fuzz), against a sanitizer build
    python fuzz/run.py --seconds 420 --asan --imagenet 500 # a long run; the corpus in --workdir grows across runs
    python fuzz/run.py --seconds 0 --asan --coverage-report --workdir DIR   # csrc/ edge coverage of DIR's corpora

ipu_cnn is imported from the Python path as it is: put a build with IPU_CNN_FUZZ_COVERAGE first on PYTHONPATH for
coverage of the native code and ASan/UBSan reports (``--asan`` then preloads atheris's ASan+libFuzzer runtime, which
Python itself lacks), or run against any build without ``--asan`` (Python coverage only, crashes still found).
Exits 1 if any target found something: its input is saved as <workdir>/findings/<target>-crash-*, and the output
says how to replay it.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import CORPORA, REPO, SOURCE_SEPARATOR
from seeds import TARGETS, build

HERE = Path(__file__).resolve().parent
STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
FINAL = re.compile(r"^stat::(\w+):\s+(\d+)")


def asan_runtime() -> str:
    """atheris's ASan runtime with libFuzzer linked in (the runtime a -fsanitize=fuzzer-no-link build expects)."""
    try:
        import atheris
    except ImportError:
        sys.exit("fuzz/run.py: atheris is not installed; pip install atheris")
    path = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not path.is_file():
        sys.exit(f"fuzz/run.py: {path} is missing; this atheris wheel has no sanitizer runtime (install a newer one)")
    return str(path)


def known_findings(path: Path | None) -> list[tuple[str, str]]:
    """(kind, argument) entries of a known-findings file (see fuzz/known_findings); [] for none."""
    if path is None:
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in ("skip-form", "skip-check", "tolerate", "ubsan", "libfuzzer"):
            sys.exit(f"{path}:{n}: expected 'skip-form FORM', 'skip-check NAME', 'tolerate MODULE.EXCEPTION', "
                     f"'ubsan CHECK:FILE' or 'libfuzzer -FLAG=VALUE', got {line.strip()!r}")
        entries.append((words[0], words[1]))
    return entries


def apply_known(entries: list[tuple[str, str]], env: dict[str, str], workdir: Path) -> None:
    """Steer the targets around known findings through their environment."""
    forms = [arg for kind, arg in entries if kind == "skip-form"]
    checks = [arg for kind, arg in entries if kind == "skip-check"]
    tolerate = [arg for kind, arg in entries if kind == "tolerate"]
    ubsan = [arg for kind, arg in entries if kind == "ubsan"]
    if forms:
        env["IPU_CNN_FUZZ_SKIP_FORMS"] = ",".join(forms)
    if checks:
        env["IPU_CNN_FUZZ_SKIP_CHECKS"] = ",".join(checks)
    if tolerate:
        env["IPU_CNN_FUZZ_TOLERATE"] = ",".join(tolerate)
    if ubsan:
        supp = workdir / "ubsan.supp"
        supp.write_text("".join(f"{rule}\n" for rule in ubsan))
        env["UBSAN_OPTIONS"] = f"suppressions={supp}:" + env.get("UBSAN_OPTIONS", "")


def write_dict(path: Path, batch: bool) -> Path:
    """libFuzzer dictionary: fuzz/jpeg.dict, plus the source separator for decode_batch."""
    text = (HERE / "jpeg.dict").read_text()
    if batch:
        text += "\nsource_separator=\"" + "".join(f"\\x{b:02x}" for b in SOURCE_SEPARATOR) + "\"\n"
    path.write_text(text)
    return path


def run_target(target: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, object]:
    work = args.workdir
    corpus, seeds, findings = work / "corpus" / target, work / "seeds" / target, work / "findings"
    for d in (corpus, findings, work / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{target}.log"
    cmd = [sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus), str(seeds),
           f"-max_total_time={args.seconds}", f"-max_len={args.max_len}", f"-timeout={args.timeout}",
           f"-rss_limit_mb={args.rss_limit_mb}", "-print_final_stats=1", f"-artifact_prefix={findings}/{target}-",
           f"-dict={write_dict(work / f'{target}.dict', target == 'decode_batch')}", *args.libfuzzer]
    before = set(_artifacts(findings, target))
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(cmd, env=dict(env, IPU_CNN_FUZZ_SCRATCH=str(work / "scratch" / target)), stdout=out,
                            stderr=subprocess.STDOUT, cwd=work).returncode
    result: dict[str, object] = {"target": target, "rc": rc, "seconds": time.monotonic() - start, "log": log}
    for line in log.read_text(errors="replace").splitlines():
        if m := STATUS.match(line):
            result.update(execs=int(m[1]), cov=int(m[2]), ft=int(m[3]), corpus=int(m[4]))
        elif m := FINAL.match(line):
            result[m[1]] = int(m[2])
    result["crashes"] = sorted(set(_artifacts(findings, target)) - before)  # this run's only
    return result


COVERED_FUNC = re.compile(r"^(?:UN)?COVERED_FUNC: hits: \d+ edges: (\d+)/(\d+) .* (\S+):\d+$")


def native_coverage(target: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Replay the target's corpus once with -print_coverage=1: (edges covered, edges) per csrc/ file, summed over
    its functions. Needs a build with IPU_CNN_FUZZ_COVERAGE."""
    corpus = args.workdir / "corpus" / target
    cmd = [sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus), "-runs=0", "-print_coverage=1",
           f"-max_len={args.max_len}", f"-rss_limit_mb={args.rss_limit_mb}"]
    proc = subprocess.run(cmd, env=dict(env, IPU_CNN_FUZZ_SCRATCH=str(args.workdir / "scratch" / target)),
                          capture_output=True, text=True, errors="replace", cwd=args.workdir)
    files: dict[str, tuple[int, int]] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if (m := COVERED_FUNC.match(line)) and "/csrc/" in m[3]:
            name = m[3].rsplit("/csrc/", 1)[1]
            covered, total = files.get(name, (0, 0))
            files[name] = (covered + int(m[1]), total + int(m[2]))
    return files


def report_excerpt(log: Path) -> str:
    """The report in a target's log: from its first line (Python exception, sanitizer error) on, without the fuzzer's
    own exit stack; the log's end when there is no such line."""
    lines = log.read_text(errors="replace").splitlines()
    marks = ("=== Uncaught Python exception", "ERROR: AddressSanitizer", "runtime error:", "ERROR: libFuzzer")
    first = next((i for i, line in enumerate(lines) if any(m in line for m in marks)), None)
    if first is None:
        return "\n".join(lines[-60:])
    exited = next((i for i, line in enumerate(lines) if "ERROR: libFuzzer: fuzz target exited" in line), len(lines))
    kept = [line for i, line in enumerate(lines[first:], first) if not (i > exited and line.startswith("    #"))]
    return "\n".join(kept[:45] + ["..."] + lines[-4:])


def _artifacts(findings: Path, target: str) -> list[str]:
    """libFuzzer's crash-, timeout-, oom- and leak- files for target (slow-unit- files are not findings)."""
    return [str(p) for kind in ("crash", "timeout", "oom", "leak") for p in findings.glob(f"{target}-{kind}-*")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Anything after -- goes to libFuzzer.")
    ap.add_argument("--seconds", type=int, default=25,
                    help="fuzzing time per target (default 25; 0: no fuzzing, only --coverage-report)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    ap.add_argument("--workdir", type=Path, default=REPO / "build" / "fuzz-work",
                    help="seeds, the growing corpus, logs and findings (default build/fuzz-work)")
    ap.add_argument("--asan", action="store_true", help="preload atheris's ASan runtime (for a sanitizer build)")
    ap.add_argument("--imagenet", type=int, default=40, help="ImageNet-sample photos among the seeds (default 40)")
    ap.add_argument("--max-len", type=int, default=65536, help="libFuzzer -max_len (longer seeds are truncated)")
    ap.add_argument("--timeout", type=int, default=60, help="libFuzzer -timeout: seconds one input may take")
    ap.add_argument("--rss-limit-mb", type=int, default=3072, help="libFuzzer -rss_limit_mb (also the malloc limit)")
    ap.add_argument("--known", default=str(HERE / "known_findings"),
                    help="known-findings file to steer around (default fuzz/known_findings; 'none' for none)")
    ap.add_argument("--resample-isa", choices=("avx512vnni", "avxvnni", "avx2", "sse4.1", "scalar"),
                    help="make the resampler's fast path this narrower one (IPU_CNN_RESAMPLE_ISA): the CPU's best is "
                         "the only one fuzzed otherwise")
    ap.add_argument("--coverage-report", action="store_true",
                    help="after fuzzing, print each target's edge coverage of every csrc/ file (replays the corpus)")
    ap.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    args.workdir = args.workdir.resolve()
    if importlib.util.find_spec("atheris") is None:  # fail here with the fix rather than in each target
        sys.exit(f"fuzz/run.py: atheris is not installed for {sys.executable}; pip install atheris")
    if not CORPORA.is_dir():
        print(f"fuzz: no corpora at {CORPORA} (set IPU_CNN_CORPORA); seeding from generated JPEGs only", flush=True)
    counts = build(args.workdir / "seeds", args.imagenet)

    env = dict(os.environ)
    env["PYTHONMALLOC"] = "malloc"  # every Python object its own malloc block, so ASan sees past-the-end reads
    if args.asan:
        env["LD_PRELOAD"] = " ".join(p for p in (asan_runtime(), env.get("LD_PRELOAD")) if p)
        env["ASAN_OPTIONS"] = "detect_leaks=0:" + env.get("ASAN_OPTIONS", "")
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:" + env.get("UBSAN_OPTIONS", "")

    if args.resample_isa:
        # Only a path this CPU runs, other than its widest (which a run without the option already fuzzes).
        probe = subprocess.run([sys.executable, "-c", "from ipu_cnn import _C; print(' '.join(_C.simd_paths()))"],
                               env=env, capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            sys.exit(f"fuzz/run.py: cannot import ipu_cnn to list the resampler's paths:\n{probe.stderr[-2000:]}")
        paths = probe.stdout.split()
        if args.resample_isa not in paths[1:]:
            why = "its widest path, fuzzed without --resample-isa" if paths[:1] == [args.resample_isa] else "not run"
            print(f"fuzz: the resampler's {args.resample_isa} path is {why} on this CPU ({', '.join(paths)}): "
                  "nothing to do")
            return
        env["IPU_CNN_RESAMPLE_ISA"] = args.resample_isa
    known = known_findings(None if args.known == "none" else Path(args.known))
    apply_known(known, env, args.workdir)
    args.libfuzzer = [arg for kind, arg in known if kind == "libfuzzer"] + args.libfuzzer
    for kind, arg in known:
        print(f"fuzz: known finding, steered around: {kind} {arg}")

    results = []
    for target in targets if args.seconds > 0 else ():
        print(f"fuzz: {target} for {args.seconds} s from {counts[target]} seeds ...", flush=True)
        results.append(r := run_target(target, args, env))
        if r["rc"] != 0 or r["crashes"]:
            print(f"fuzz: {target} FOUND SOMETHING (exit {r['rc']}); from {r['log']}:")
            print(report_excerpt(Path(r["log"])))
            prefix = "".join(f"{k}={env[k]} " for k in ("LD_PRELOAD", "PYTHONPATH") if env.get(k))
            for crash in r["crashes"]:
                print(f"fuzz: replay with: {prefix}{sys.executable} {HERE / f'fuzz_{target}.py'} {crash}")

    print(f"\n{'target':<14}{'seconds':>8}{'execs':>10}{'exec/s':>8}{'cov':>7}{'ft':>7}{'corpus':>8}  result")
    for r in results:
        verdict = "ok" if r["rc"] == 0 and not r["crashes"] else f"FINDING (exit {r['rc']})"
        execs = r.get("number_of_executed_units", r.get("execs", 0))
        print(f"{r['target']:<14}{r['seconds']:>8.0f}{execs:>10}{r.get('average_exec_per_sec', 0):>8}"
              f"{r.get('cov', 0):>7}{r.get('ft', 0):>7}{r.get('corpus', 0):>8}  {verdict}")
    if args.coverage_report:
        print("\nnative edge coverage (covered/instrumented edges of the functions in each csrc/ file):")
        for target in targets:
            files = native_coverage(target, args, env)
            cells = ", ".join(f"{name} {c}/{t} ({100 * c / max(t, 1):.0f}%)" for name, (c, t) in sorted(files.items()))
            print(f"  {target}: {cells or 'none (not a coverage build?)'}")
    sys.exit(1 if any(r["rc"] != 0 or r["crashes"] for r in results) else 0)


if __name__ == "__main__":
    main()
