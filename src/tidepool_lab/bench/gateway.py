"""Gateway benchmark: warm GetObject latency (100 KiB) and throughput (256 MiB) with boto3.

``python -m tidepool_lab.bench.gateway --json out/gateway.json`` starts a real S3 origin (juicefs)
on loopback, a ``tidepool up`` worker and a ``tidepool gateway`` process in front of it, reads
everything once through the gateway to warm the cache, then measures with one boto3 client:

* warm GetObject of 100 KiB objects: p50 / p99 per request (target p50 <= 3 ms);
* warm GetObject of one 256 MiB object, streamed: MB/s (target >= 300 MB/s).

Every byte read is checked against the MD5 of what was uploaded (outside the timed part). It is a
program, not a test: it prints a table and writes JSON. Limits: there is no WAN here — the cold
read is a local origin too, so only the warm figures mean anything; one noisy machine, one run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

MiB = 1 << 20


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def gateway_process(
    endpoint: str, key: str, secret: str, log_path: Path
) -> Iterator[tuple[str, int]]:
    """A ``tidepool gateway`` child in front of ``endpoint``, signing with ``key``/``secret``:
    its URL and PID, stopped at the end."""
    from tidepool_lab.testbed import log_tail, stop_process_group
    from tidepool_lab.testbed.s3server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(TIDEPOOL_GATEWAY_ACCESS_KEY=key, TIDEPOOL_GATEWAY_SECRET_KEY=secret)
    cmd = [sys.executable, "-m", "tidepool.gateway.cli", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--endpoint", endpoint]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while b"tidepool gateway serving on" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start:\n{log_tail(log_path)}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop_process_group(proc)


def _get(client: Any, key: str) -> bytes:
    data: bytes = client.get_object(Bucket="gw", Key=key)["Body"].read()
    return data


def _raw_p50(url: str, keys: list[str], n: int) -> float:
    """p50 of the same GETs over one keep-alive ``http.client`` connection with presigned URLs:
    the gateway's share of the boto3 figure, without botocore's per-call overhead."""
    import http.client
    from urllib.parse import urlsplit

    import boto3

    from tidepool_lab.testbed import s3util

    presigner = boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name=s3util.REGION,
        config=s3util.botocore_config(signature_version="s3v4"),
    )
    targets = []
    for key in keys:
        signed = urlsplit(
            presigner.generate_presigned_url("get_object", Params={"Bucket": "gw", "Key": key})
        )
        targets.append(f"{signed.path}?{signed.query}")
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        conn.request("GET", targets[i % len(targets)])
        reply = conn.getresponse()
        reply.read()
        lat.append(time.perf_counter() - t)
        if reply.status != 200:
            raise AssertionError(f"presigned GET answered {reply.status}")
    conn.close()
    return _pct(lat, 0.5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tidepool_lab.testbed import s3util
    from tidepool_lab.testbed.s3server import S3Server
    from tidepool_lab.testbed.specs import S3DatasetSpec
    from tidepool_lab.testbed.workerproc import WorkerProcess

    rng = random.Random(7)
    small = {f"small/f{i:04d}.bin": rng.randbytes(100 * 1024) for i in range(args.files)}
    big = b"".join(rng.randbytes(MiB) for _ in range(args.big_mib))
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in small.items()}
    md5["big.bin"] = hashlib.md5(big).hexdigest()
    res: dict[str, Any] = {"files": args.files, "big_mib": args.big_mib, "requests": args.requests}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tp-gwbench-")))
        print("starting the S3 origin and uploading …", flush=True)
        server = stack.enter_context(S3Server.start(work / "s3"))
        server.create_bucket("gwbench")
        s3util.upload(server, "gwbench", ((f"data/{k}", v) for k, v in small.items()))
        s3util.upload(server, "gwbench", [("data/big.bin", big)], concurrency=1)
        del big
        spec = S3DatasetSpec(
            url="s3://gwbench/data/",
            endpoint=server.endpoint,
            cache=work / "cache",
            name="gw",
            credentials="inline",
            access_key=server.access_key,
            secret_key=server.secret_key,
            quota="4Gi",
            watermarks=("0.95", "0.7"),
        ).write(work / "gw.yaml")
        worker = stack.enter_context(WorkerProcess.start([spec], work / "worker.log"))
        gateway = gateway_process(worker.endpoint, "bench", "bench-secret", work / "gw.log")
        url, _ = stack.enter_context(gateway)
        client = s3util.boto3_client(url, "bench", "bench-secret")
        print("warming the cache through the gateway …", flush=True)
        for key in small:
            assert hashlib.md5(_get(client, key)).hexdigest() == md5[key], key
        t0 = time.perf_counter()
        cold = _get(client, "big.bin")
        res["big_first_read_mbps"] = len(cold) / (time.perf_counter() - t0) / 1e6
        assert hashlib.md5(cold).hexdigest() == md5["big.bin"]
        del cold
        print("measuring …", flush=True)
        keys = list(small)
        lat: list[float] = []
        for i in range(args.requests):
            key = keys[i % len(keys)]
            t = time.perf_counter()
            data = _get(client, key)
            lat.append(time.perf_counter() - t)
            if hashlib.md5(data).hexdigest() != md5[key]:
                raise AssertionError(f"{key}: bytes differ from the origin")
        res["small_p50_ms"] = _pct(lat, 0.5) * 1e3
        res["small_p99_ms"] = _pct(lat, 0.99) * 1e3
        res["small_mean_ms"] = statistics.fmean(lat) * 1e3
        res["small_raw_p50_ms"] = _raw_p50(url, keys, args.requests) * 1e3
        rates = []
        for _ in range(args.big_rounds):
            h = hashlib.md5()
            body = client.get_object(Bucket="gw", Key="big.bin")["Body"]
            t = time.perf_counter()
            chunks = []
            while chunk := body.read(8 * MiB):
                chunks.append(chunk)
            elapsed = time.perf_counter() - t
            for chunk in chunks:
                h.update(chunk)
            del chunks
            if h.hexdigest() != md5["big.bin"]:
                raise AssertionError("big.bin: bytes differ from the origin")
            rates.append(args.big_mib * MiB / elapsed / 1e6)
        res["big_warm_mbps"] = statistics.median(rates)
        res["big_warm_mbps_all"] = rates
    res["targets"] = {"small_p50_ms": 3.0, "big_warm_mbps": 300.0}
    return res


def _report(res: dict[str, Any]) -> None:
    big = f"GetObject {res['big_mib']} MiB"
    rows = [
        ("GetObject 100 KiB warm, p50", f"{res['small_p50_ms']:.2f} ms", "<= 3 ms"),
        ("GetObject 100 KiB warm, p99", f"{res['small_p99_ms']:.2f} ms", ""),
        ("  same, raw HTTP (no botocore), p50", f"{res['small_raw_p50_ms']:.2f} ms", ""),
        (f"{big} warm", f"{res['big_warm_mbps']:.0f} MB/s", ">= 300 MB/s"),
        (f"{big} first read", f"{res['big_first_read_mbps']:.0f} MB/s", "(local origin)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'gateway, boto3':<{width}}  {'measured':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tidepool_lab.bench.gateway", description=__doc__
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--files", type=int, default=200, help="100 KiB objects")
    parser.add_argument("--requests", type=int, default=2000, help="timed small GETs")
    parser.add_argument("--big-mib", type=int, default=256, help="size of the large object")
    parser.add_argument("--big-rounds", type=int, default=5, help="timed large GETs")
    args = parser.parse_args(argv)
    res = run(args)
    _report(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
