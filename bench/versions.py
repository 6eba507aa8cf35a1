#!/usr/bin/env python3
"""Copying every version (`versions = "all"`) beside copying current versions, same bucket.

Run it through `bench/versions`, which installs what is missing and builds ferry in release
mode. It starts two moto servers (moto keeps versions; Garage does not), seeds a versioned
source bucket with KEYS keys of VERSIONS versions each (1 KiB), and copies it twice with
`ferry run` on a Redis of its own, one rule at a time:

- `versions = "all"` into a versioned destination bucket (every version, oldest first);
- `versions = "current"` into another (the current version of each key).

It prints, per copy: wall seconds, ferry's own CPU seconds and CPU per object written, the
S3 requests the two servers answered (from moto's own request log, by operation; the
capability probe's requests left out), and the ledger's bytes in Redis (the sum of its
values, and per version copied). The wall-time ratio says what copying every version costs
beside copying the current one; moto is slow (about 350 writes/s), so the ratio, not the
seconds, is what carries over to other stores.
"""

import argparse
import collections
import datetime
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "release" / "ferry"))
LINE = re.compile(r'"(GET|PUT|HEAD|DELETE|POST) (\S+) HTTP/1\.[01]" (\d+)')


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} did not start on port {port}")


class Moto:
    """One moto server, whose request log says what it answered."""

    def __init__(self, workdir, name):
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.proc = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        wait_port(self.port, name)
        self.url = f"http://127.0.0.1:{self.port}"

    def mark(self):
        return self.log_path.stat().st_size

    def requests(self, since):
        """The requests answered since `since`, by S3 operation (the probe's left out)."""
        counts = collections.Counter()
        with open(self.log_path, "rb") as f:
            f.seek(since)
            for raw in f:
                m = LINE.search(raw.decode("utf-8", "replace"))
                if not m or ".ferry-probe" in m.group(2):
                    continue
                counts[operation(m.group(1), m.group(2))] += 1
        return counts

    def stop(self):
        # A moto holding tens of thousands of versions takes long to exit.
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def operation(method, target):
    path, _, query = target.partition("?")
    params = {p.split("=")[0] for p in query.split("&") if p}
    key = path.strip("/").count("/") >= 1
    if method == "GET":
        if "versions" in params:
            return "ListObjectVersions"
        if "versioning" in params:
            return "GetBucketVersioning"
        if "tagging" in params:
            return "GetObjectTagging"
        if not key:
            return "ListObjectsV2"
        return "GetObject"
    if method == "PUT":
        if "tagging" in params:
            return "PutObjectTagging"
        return "PutObject" if key else "CreateBucket"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "DELETE":
        return "DeleteObject"
    return f"{method} {'object' if key else 'bucket'}"


def client(url):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="bench",
                        aws_secret_access_key="bench", region_name="us-east-1",
                        config=Config(max_pool_connections=32))


def seed(src, bucket, keys, versions):
    c = client(src.url)
    c.create_bucket(Bucket=bucket)
    c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def one(i):
        key = f"d{i % 100:02d}/k{i:06d}"
        for v in range(versions):
            c.put_object(Bucket=bucket, Key=key, Body=os.urandom(1024),
                         Metadata={"rev": str(v)}, ContentType="application/octet-stream")

    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(keys)))
    log(f"bench: seeded {keys} keys x {versions} versions in {time.time() - started:.0f} s")


def config_text(src, dst, rule, source, destination, versions, redis_url):
    return (f'[redis]\nurl = "{redis_url}"\nnamespace = "bench"\n\n'
            f'[endpoints.src]\nurl = "{src.url}"\nregion = "us-east-1"\n'
            f'access_key_id = "bench"\nsecret_access_key = "bench"\n\n'
            f'[endpoints.dst]\nurl = "{dst.url}"\nregion = "us-east-1"\n'
            f'access_key_id = "bench"\nsecret_access_key = "bench"\n\n'
            f'[[rules]]\nname = "{rule}"\n'
            f'source = {{ endpoint = "src", bucket = "{source}" }}\n'
            f'destination = {{ endpoint = "dst", bucket = "{destination}" }}\n'
            f'versions = "{versions}"\nstop = "once"\n')


SUM_LEDGER = """
local total, entries = 0, 0
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  local all = redis.call('HGETALL', key)
  for i = 2, #all, 2 do total = total + #all[i]; entries = entries + 1 end
end
return {total, entries}
"""


def ledger_bytes(redis_port):
    """The bytes of the ledger's values (its `:l:N` hashes), and its entries."""
    out = subprocess.run(["redis-cli", "-p", str(redis_port), "EVAL", SUM_LEDGER, "0", "*:l:*"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def copy(workdir, src, dst, source, versions, n_versions):
    """One `ferry run` of a rule copying `source` with `versions`, on a fresh Redis."""
    destination = f"dst-{versions}"
    c = client(dst.url)
    c.create_bucket(Bucket=destination)
    if versions == "all":
        c.put_bucket_versioning(Bucket=destination,
                                VersioningConfiguration={"Status": "Enabled"})
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_port(redis_port, "redis-server")
    cfg = workdir / f"{versions}.toml"
    cfg.write_text(config_text(src, dst, f"copy-{versions}", source, destination, versions,
                               f"redis://127.0.0.1:{redis_port}"))
    cfg.chmod(0o600)
    marks = (src.mark(), dst.mark())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    out = subprocess.run([str(FERRY), "run", "--config", str(cfg), "--concurrency", "32"],
                         capture_output=True, text=True)
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"bench: ferry run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    requests = (src.requests(marks[0]), dst.requests(marks[1]))
    ledger, entries = ledger_bytes(redis_port)
    redis.terminate()
    redis.wait(timeout=30)
    written = sum(n for op, n in requests[1].items() if op == "PutObject")
    return {"mode": versions, "wall": wall, "cpu": cpu, "requests": requests,
            "written": written, "ledger": ledger, "entries": entries,
            "versions": n_versions if versions == "all" else entries}


def fmt(counts):
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10_000, help="keys (default 10,000)")
    ap.add_argument("--versions", type=int, default=5, help="versions per key (default 5)")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-versions-"))
    src, dst = Moto(workdir, "src-moto"), Moto(workdir, "dst-moto")
    try:
        seed(src, "source", args.keys, args.versions)
        runs = []
        for mode in ("all", "current"):
            log(f"bench: versions = {mode}")
            runs.append(copy(workdir, src, dst, "source", mode, args.keys * args.versions))
    finally:
        src.stop()
        dst.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = [
        "## Every version beside the current one", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}",
        f"- ferry: {subprocess.run([str(FERRY), '--version'], capture_output=True, text=True).stdout.strip()}; "
        "two moto servers, `ferry run` with one worker of 32 tasks, a Redis of its own",
        f"- command: `{shlex.join(['bench/versions', *sys.argv[1:]])}`", "",
        "| versions | keys | objects written | wall s | wall / current | ferry CPU s | "
        "CPU ms/object | source requests | destination requests | ledger bytes | "
        "ledger bytes/version |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    current = runs[1]["wall"]
    for r in runs:
        per = r["ledger"] / max(r["versions"], 1)
        report.append(
            f"| {r['mode']} | {args.keys} | {r['written']} | {r['wall']:.1f} | "
            f"{r['wall'] / current:.2f} | {r['cpu']:.1f} | "
            f"{1000 * r['cpu'] / max(r['written'], 1):.3f} | {fmt(r['requests'][0])} | "
            f"{fmt(r['requests'][1])} | {r['ledger']} | {per:.1f} |")
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
