#!/usr/bin/env python3
"""Install relive with its test dependencies for every supported Python and run all tests.

    python3 dev/test.py              # the environments, the Rust tests, then pytest on 3.11, 3.12 and 3.13
    python3 dev/test.py --torch      # ... with PyTorch installed too (about 3 GB, once)
    python3 dev/test.py -k shared    # extra arguments go to pytest

Each Python gets its own virtual environment under ~/.cache/relive-dev (reused, so
that PyTorch is downloaded once per machine); cargo's build directory is shared there too.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RELIVE_DEV_CACHE", Path.home() / ".cache" / "relive-dev"))
VERSIONS = ("3.11", "3.12", "3.13")
TORCH = "torch==2.13.0"


def sh(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True,
       capture: bool = False) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=check, text=True,
                          capture_output=capture)


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


def run_streamed(*cmd: str | Path, env: dict[str, str]) -> tuple[int, str]:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    return proc.wait(), "".join(lines)


def venv_for(version: str, env: dict[str, str], torch: bool) -> Path | None:
    python = shutil.which(f"python{version}", path=env.get("PATH"))
    if python is None:
        return None
    venv = CACHE / "venvs" / f"py{version}"
    if not (venv / "bin" / "python").exists():
        sh(python, "-m", "venv", venv, env=env)
        sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "-U", "pip", env=env)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    sh(*pip, "-e", f"{ROOT}[test]", env=env)
    if torch and sh(venv / "bin" / "python", "-c", "import torch", env=env, check=False).returncode != 0:
        sh(*pip, TORCH, env=env)
    return venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", action="store_true", help=f"install {TORCH} into each environment")
    parser.add_argument("--require-all", action="store_true", help="fail if a supported Python is missing")
    parser.add_argument("--python", action="append", choices=VERSIONS, help="only these versions")
    args, pytest_args = parser.parse_known_args()
    args.require_all = args.require_all or os.environ.get("CI") == "true"

    env = {**os.environ, "CARGO_TARGET_DIR": str(CACHE / "target")}
    CACHE.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, int, int, str]] = []

    venvs = {version: venv_for(version, env, args.torch) for version in args.python or VERSIONS}

    # The store's tests, the S3 backend's included: they start SeaweedFS's `weed`, which the
    # test extra installs into each environment.
    weed_dirs = [str(v / "bin") for v in venvs.values() if v is not None and (v / "bin" / "weed").exists()]
    cargo_env = {**env, "PATH": os.pathsep.join([*weed_dirs[:1], env.get("PATH", "")])}
    status, output = run_streamed("cargo", "test", "-p", "relive-store", "--release", env=cargo_env)
    passed, failed = counts(output)
    results.append(("cargo test (relive-store)", passed, failed + (status != 0 and failed == 0), ""))

    for version, venv in venvs.items():
        if venv is None:
            note = f"python{version} not found"
            results.append((f"python {version}", 0, int(args.require_all), note))
            print(f"!! {note}: skipped", flush=True)
            continue
        status, output = run_streamed(venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                      *pytest_args, env=env)
        passed, failed = counts(output)
        if status not in (0, 5) and failed == 0:
            failed = 1  # pytest could not even run (collection or usage error)
        results.append((f"python {version}", passed, failed, ""))

    print("\nsummary")
    for name, passed, failed, note in results:
        print(f"  {name:28s} {passed:4d} passed, {failed} failed {note}")
    total_passed = sum(r[1] for r in results)
    total_failed = sum(r[2] for r in results)
    print(f"{total_passed} passed, {total_failed} failed")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
