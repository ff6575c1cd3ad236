"""Real IPython kernels for the notebook tests: ipykernel running this test's Python (and so
this relive), driven by jupyter_client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import relive
from conftest import ENV
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

KERNEL_NAME = "relive-test"


def kernel_specs(where: Path, env: dict[str, str] | None = None) -> KernelSpecManager:
    """A kernel spec (``relive-test``) under ``where`` that runs this Python; ``env`` is added
    to the kernel's environment (what nbclient's kernels get, having no other way)."""
    spec = where / ".kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "relive test", "language": "python", "env": env or {}}))
    return KernelSpecManager(kernel_dirs=[str(spec.parent)])


def kernel_env() -> dict[str, str]:
    """The tests' environment, with this relive first on the path, not another one installed."""
    path = [str(Path(relive.__file__).parents[1]), *filter(None, [ENV.get("PYTHONPATH")])]
    return {**ENV, "PYTHONPATH": os.pathsep.join(path)}


class Kernel:
    """A real kernel running this test's Python (and so this relive), in ``cwd``."""

    def __init__(self, cwd: Path, notebook: str | None = None) -> None:
        self.cwd = cwd
        env = kernel_env()
        if notebook is not None:
            env["JPY_SESSION_NAME"] = notebook
        self.manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs(cwd))
        self.manager.start_kernel(cwd=str(cwd), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> tuple[str, str, str]:
        """Runs a cell: its status ("ok", "error"), its stdout (results included) and stderr."""
        out: list[str] = []
        err: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif msg["msg_type"] == "execute_result":
                out.append(content["data"]["text/plain"] + "\n")
            elif msg["msg_type"] == "error":
                err.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, timeout=60, output_hook=hook)
        return reply["content"]["status"], "".join(out), "".join(err)

    def ok(self, code: str) -> str:
        """Runs a cell that must succeed without a word on stderr; its stdout."""
        status, out, err = self.run(code)
        assert status == "ok" and not err, f"{code!r}: {status}\n{out}\n{err}"
        return out

    def value(self, expression: str) -> Any:
        return json.loads(self.ok(f"import json as _json; print(_json.dumps({expression}))"))

    def log(self) -> list[dict[str, Any]]:
        """``%relive log --json``: this notebook's snapshots, oldest first."""
        return list(json.loads(self.ok("%relive log --json")))

    def pid(self) -> int:
        return int(self.ok("import os as _os; print(_os.getpid())"))

    def stop(self, now: bool = True) -> None:
        """Shuts the kernel down: killed (its process group too), or asked to exit (now=False),
        as Jupyter's shutdown does first."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=now)
