#!/usr/bin/env python3
"""Install relive with its test dependencies for every supported Python and run all tests.

    python3 dev/test.py              # the environments, the Rust tests, then pytest on 3.11, 3.12 and 3.13
    python3 dev/test.py --torch      # ... with PyTorch installed too (about 3 GB, once)
    python3 dev/test.py -k shared    # extra arguments go to pytest
    python3 dev/test.py --serial     # one Python after the other, its output as it comes

Each Python gets its own virtual environment under ~/.cache/relive-dev (reused, so
that PyTorch is downloaded once per machine); cargo's build directory is shared there too.
The environments are prepared side by side, and so are the three pytest runs: most of a
test's time is spent waiting on the programs it runs, so on two cores the three together
take little longer than one alone. Each run's output goes to a log under
~/.cache/relive-dev/logs and is printed whole when that run ends.
A Python that is missing is reported, and fails the run with --require-all or where CI=true.
The last line is "N passed, N failed" over everything.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RELIVE_DEV_CACHE", Path.home() / ".cache" / "relive-dev"))
VERSIONS = ("3.11", "3.12", "3.13")
TORCH = "torch==2.13.0"


def sh(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True,
       log: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; with `log`, its output is kept there rather than printed as it comes."""
    line = "+ " + " ".join(str(c) for c in cmd)
    if log is None:
        print(line, flush=True)
        return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=check, text=True)
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log.extend([line + "\n", proc.stdout])
    if check and proc.returncode != 0:
        print("".join(log), flush=True)
        proc.check_returncode()
    return proc


def counts(output: str) -> tuple[int, int]:
    """Passed and failed (errors included) from pytest's or cargo's closing lines."""
    passed = failed = 0
    for line in output.splitlines():
        if re.match(r"^test result: ", line):  # cargo
            passed += int(re.search(r"(\d+) passed", line).group(1))  # type: ignore[union-attr]
            failed += int(re.search(r"(\d+) failed", line).group(1))  # type: ignore[union-attr]
    tail = output.strip().splitlines()[-1:] if output.strip() else []
    for line in tail:  # pytest's summary line
        if "passed" in line or "failed" in line or "error" in line:
            for number, word in re.findall(r"(\d+) (passed|failed|errors?)", line):
                if word == "passed":
                    passed += int(number)
                else:
                    failed += int(number)
    return passed, failed


def run_streamed(*cmd: str | Path, env: dict[str, str], log: Path | None = None) -> tuple[int, str]:
    """Run a command, its output printed as it comes, or, with `log`, written there and
    printed whole at the end (so that runs side by side do not interleave)."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    started = time.monotonic()
    with open(log or os.devnull, "w", buffering=1) as sink:  # line by line: a log to follow
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            (sink if log else sys.stdout).write(line)
            lines.append(line)
        status = proc.wait()
    if log:
        print(f"\n== {cmd[0]} {' '.join(str(c) for c in cmd[1:4])} ... "
              f"({time.monotonic() - started:.0f} s, log {log})", flush=True)
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    return status, "".join(lines)


def venv_for(version: str, env: dict[str, str], torch: bool) -> Path | None:
    python = shutil.which(f"python{version}", path=env.get("PATH"))
    if python is None:
        return None
    venv = CACHE / "venvs" / f"py{version}"
    log: list[str] = []
    if not (venv / "bin" / "python").exists():
        sh(python, "-m", "venv", venv, env=env, log=log)
        sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "-U", "pip", env=env, log=log)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    sh(*pip, "-e", f"{ROOT}[test]", env=env, log=log)
    if torch and sh(venv / "bin" / "python", "-c", "import torch", env=env, check=False, log=log).returncode != 0:
        sh(*pip, TORCH, env=env, log=log)
    print(f"== python {version}: environment ready\n" + "".join(log), flush=True)
    return venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="store_true", help=f"install {TORCH} into each environment")
    parser.add_argument("--require-all", action="store_true", help="fail if a supported Python is missing")
    parser.add_argument("--python", action="append", choices=VERSIONS, help="only these versions")
    parser.add_argument("--serial", action="store_true", help="one Python after the other, output as it comes")
    args, pytest_args = parser.parse_known_args()
    args.require_all = args.require_all or os.environ.get("CI") == "true"

    env = {**os.environ, "CARGO_TARGET_DIR": str(CACHE / "target")}
    CACHE.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, int, int, str]] = []

    versions = args.python or VERSIONS
    workers = 1 if args.serial else len(versions)
    # Side by side: one environment's PyTorch downloads while another's extension compiles
    # (cargo's lock on the shared build directory takes the compilations in turn).
    with ThreadPoolExecutor(workers) as pool:
        venvs = dict(zip(versions, pool.map(lambda v: venv_for(v, env, args.torch), versions)))

    # The store's tests, the S3 backend's included: they start SeaweedFS's `weed`, which the
    # test extra installs into each environment.
    weed_dirs = [str(v / "bin") for v in venvs.values() if v is not None and (v / "bin" / "weed").exists()]
    cargo_env = {**env, "PATH": os.pathsep.join([*weed_dirs[:1], env.get("PATH", "")])}
    status, output = run_streamed("cargo", "test", "-p", "relive-store", "--release", env=cargo_env)
    passed, failed = counts(output)
    results.append(("cargo test (relive-store)", passed, failed + (status != 0 and failed == 0), ""))

    logs = CACHE / "logs"
    logs.mkdir(exist_ok=True)

    def suite(version: str) -> tuple[str, int, int, str]:
        venv = venvs[version]
        if venv is None:
            note = f"python{version} not found"
            print(f"!! {note}: skipped", flush=True)
            return (f"python {version}", 0, int(args.require_all), note)
        status, output = run_streamed(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                      *pytest_args, env=env,
                                      log=None if args.serial else logs / f"pytest-py{version}.log")
        passed, failed = counts(output)
        if status not in (0, 5) and failed == 0:
            failed = 1  # pytest could not even run (collection or usage error)
        return (f"python {version}", passed, failed, "")

    with ThreadPoolExecutor(workers) as pool:
        results.extend(pool.map(suite, versions))

    print("\nsummary")
    for name, passed, failed, note in results:
        print(f"  {name:28s} {passed:4d} passed, {failed} failed {note}")
    total_passed = sum(r[1] for r in results)
    total_failed = sum(r[2] for r in results)
    print(f"{total_passed} passed, {total_failed} failed")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
