#!/usr/bin/env python3
"""ferry against rclone, side by side, on two real Garage servers and a real Redis.

Run it through `bench/run`, which installs what is missing and builds the release binaries.
For each dataset it seeds a source bucket on Garage A, then copies it into a fresh bucket on
Garage B with each tool in turn (ferry with 1 coordinator and W worker processes, rclone
between them), checks every replica byte for byte, and prints one table per dataset. Requests
are counted by the servers themselves (Garage's /metrics), so both tools are counted alike.
"""

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "release" / "ferry"))
FERRY_BENCH = ROOT / "target" / "release" / "ferry-bench"

# rclone's best flags for bucket-to-bucket copies: the base set, one listing per
# bucket, and large objects in 64 MiB chunks, 8 at a time (rclone 1.60 copies an S3 object
# to another endpoint by streaming it through a multipart upload).
RCLONE_FLAGS = [
    "-M", "--transfers", "32", "--checkers", "32", "--checksum", "--fast-list",
    "--s3-chunk-size", "64M", "--s3-upload-concurrency", "8",
]


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
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} did not open port {port} within {timeout}s")


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))} failed ({out.returncode}):\n"
                         f"{out.stderr.strip()}")
    return out.stdout


class Process:
    """A child process whose peak RSS is read from wait4() when it ends."""

    def __init__(self, name, cmd, log_path, env=None):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.peak_rss_kib = None
        self.cpu = None
        self.returncode = None

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.peak_rss_kib = usage.ru_maxrss
                self.cpu = usage.ru_utime + usage.ru_stime
                self.proc.returncode = self.returncode
                self.log.close()
                return self.returncode
            if deadline is not None and time.time() > deadline:
                return None
            time.sleep(0.01)

    def stop(self, timeout=60):
        if self.returncode is None:
            # os.kill, not Popen.send_signal: that one polls first, and so reaps a child that
            # has already exited, taking its rusage with it. Until wait4 reaps it here, the pid
            # is ours (at worst a zombie), so signalling it is safe.
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.wait()
        return self.returncode

    def text(self):
        return Path(self.log_path).read_text(errors="replace")

    def cpu_so_far(self):
        """CPU seconds (user + system) used so far, from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds of the servers: source Garage, destination Garage, Redis."""

    def __init__(self, source, destination, redis):
        self.source, self.destination, self.redis = source, destination, redis

    def __sub__(self, other):
        return Cpu(self.source - other.source, self.destination - other.destination,
                   self.redis - other.redis)

    def __str__(self):
        return f"{self.source:.1f} / {self.destination:.1f} / {self.redis:.1f}"


class Garage:
    """A single-node Garage with its S3 API, admin API (for /metrics) and one key."""

    def __init__(self, binary, workdir, name):
        self.binary, self.dir, self.name = binary, workdir / name, name
        self.dir.mkdir(parents=True)
        self.s3, rpc, self.admin = free_port(), free_port(), free_port()
        self.conf = self.dir / "garage.toml"
        self.conf.write_text(
            f'metadata_dir = "{self.dir}/meta"\ndata_dir = "{self.dir}/data"\n'
            'db_engine = "lmdb"\nreplication_factor = 1\nconsistency_mode = "consistent"\n'
            'metadata_fsync = false\ndata_fsync = false\ncompression_level = "none"\n'
            f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_secret = "{secrets.token_hex(32)}"\n'
            f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{self.s3}"\n'
            'root_domain = ".s3.garage.localhost"\n'
            f'[admin]\napi_bind_addr = "127.0.0.1:{self.admin}"\n'
            f'admin_token = "{secrets.token_hex(16)}"\n')
        # Garage stores blocks under data/XX/YY/, creating those directories as it first
        # needs them. Create all 65,536 now so the first run measured does not pay for them.
        for i in range(256):
            for j in range(256):
                os.makedirs(self.dir / "data" / f"{i:02x}" / f"{j:02x}")
        self.proc = Process(f"garage-{name}", [binary, "-c", self.conf, "server"],
                            self.dir / "garage.log")
        deadline = time.time() + 30
        while subprocess.run([binary, "-c", self.conf, "status"],
                             capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise SystemExit(f"bench: garage {name} did not start:\n{self.proc.text()}")
            time.sleep(0.2)
        node = self.cli("node", "id", "-q").strip().split("@")[0]
        self.cli("layout", "assign", "-z", "dc1", "-c", "100G", node)
        self.cli("layout", "apply", "--version", "1")
        self.access_key = "GK" + secrets.token_hex(12)
        self.secret_key = secrets.token_hex(32)
        self.cli("key", "import", "--yes", "-n", "bench", self.access_key, self.secret_key)
        wait_port(self.s3, f"garage {name}")
        self.url = f"http://127.0.0.1:{self.s3}"

    def cli(self, *args):
        return run([self.binary, "-c", self.conf, *args])

    def bucket(self, name):
        self.cli("bucket", "create", name)
        self.cli("bucket", "allow", "--read", "--write", "--owner", name,
                 "--key", self.access_key)
        return name

    def requests(self):
        """S3 requests served so far, by API operation."""
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics").read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"bench: garage /metrics answered {e.code}: {e.read().decode()}\n"
                             "bench: scripts/deps.sh --garage builds Garage with metrics")
        body = body.decode()
        counts = {}
        for line in body.splitlines():
            m = re.match(r'api_s3_request_counter\{([^}]*)\} (\S+)', line)
            if m:
                op = re.search(r'api_endpoint="([^"]+)"', m.group(1)).group(1)
                counts[op] = counts.get(op, 0) + float(m.group(2))
        return counts


def request_delta(servers, before):
    after = [s.requests() for s in servers]
    delta = {}
    for b, a in zip(before, after):
        for op, n in a.items():
            d = int(round(n - b.get(op, 0)))
            if d:
                delta[op] = delta.get(op, 0) + d
    return delta


def scrape(port, metric):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(metric + " ") or line.startswith(metric + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Window:
    """One measured run, opened once the servers are idle: its wall time, and the requests
    the servers served and the CPU they used meanwhile."""

    def __init__(self, bench):
        bench.settle()
        self.bench = bench
        self.requests_before = [s.requests() for s in bench.servers]
        self.cpu_before = bench.server_cpu()
        self.started = time.time()

    def close(self):
        self.wall = time.time() - self.started
        self.server_cpu = self.bench.server_cpu() - self.cpu_before

    def requests(self):
        return request_delta(self.bench.servers, self.requests_before)


class Bench:
    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        garage = shutil.which("garage") or str(Path.home() / ".cargo/bin/garage")
        self.redis_port = free_port()
        self.redis = Process("redis", ["redis-server", "--port", str(self.redis_port),
                                       "--save", "", "--appendonly", "no"],
                             workdir / "redis.log")
        wait_port(self.redis_port, "redis-server")
        self.src = Garage(garage, workdir, "source")
        self.garage = garage
        self.dst = None
        self.destinations = 0
        self.runs = 0

    @property
    def servers(self):
        return [self.src, self.dst]

    def fresh_destination(self):
        """A new, empty destination server for the next run. Garage stores each block once
        per server, so a tool copying data that an earlier run already wrote there would
        skip the block writes and look faster; every run gets its own destination server."""
        if self.dst is not None:
            self.dst.proc.stop()
            shutil.rmtree(self.dst.dir, ignore_errors=True)
        self.destinations += 1
        self.dst = Garage(self.garage, self.workdir, f"destination{self.destinations}")

    def server_cpu(self):
        """CPU seconds the source Garage, the destination Garage and Redis have used so far."""
        return Cpu(*(p.cpu_so_far() for p in [self.src.proc, self.dst.proc, self.redis]))

    def settle(self, timeout=120):
        """Waits until the servers are idle: Garage goes on updating its indexes after a run,
        and that work must not be charged to the next one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            before = self.server_cpu()
            time.sleep(0.5)
            used = self.server_cpu() - before
            if used.source + used.destination + used.redis < 0.02:
                return
        log("bench: the servers did not go idle; measuring anyway")

    def close(self):
        for p in [self.src.proc, self.redis] + ([self.dst.proc] if self.dst else []):
            p.stop()

    def config(self, namespace, rule, source_bucket, destination_bucket, redis=True):
        path = self.workdir / f"{namespace}.toml"
        endpoints = "".join(
            f'[endpoints.{name}]\nurl = "{g.url}"\nregion = "garage"\npath_style = true\n'
            f'access_key_id = "{g.access_key}"\nsecret_access_key = "{g.secret_key}"\n\n'
            for name, g in (("src", self.src), ("dst", self.dst or self.src)))
        redis_section = (f'[redis]\nurl = "redis://127.0.0.1:{self.redis_port}"\n'
                         f'namespace = "{namespace}"\n\n') if redis else ""
        path.write_text(
            f'{redis_section}{endpoints}'
            f'[[rules]]\nname = "{rule}"\nstop = "never"\ninterval = "1h"\n'
            f'source = {{ endpoint = "src", bucket = "{source_bucket}" }}\n'
            f'destination = {{ endpoint = "dst", bucket = "{destination_bucket}" }}\n')
        return path

    def seed(self, dataset):
        bucket = self.src.bucket(f"src-{dataset}")
        config = self.config(f"seed-{dataset}", "seed", bucket, bucket + "-unused")
        log(f"bench: seeding {dataset} into {bucket}")
        out = run([FERRY_BENCH, "seed", "--config", config, "--endpoint", "src",
                   "--bucket", bucket, "--dataset", dataset, "--scale", str(self.args.scale)])
        info = json.loads(out)
        log(f"bench: seeded {info['objects']} objects, {info['bytes']} bytes "
            f"in {info['seconds']:.1f} s")
        return bucket, info

    def verify(self, config, source_bucket, destination_bucket):
        out = subprocess.run(
            [FERRY_BENCH, "verify", "--config", config, "--source", f"src/{source_bucket}",
             "--destination", f"dst/{destination_bucket}"], capture_output=True, text=True)
        if out.returncode == 2 or not out.stdout.strip():
            raise SystemExit(f"bench: verify failed to run: {out.stderr}")
        report = json.loads(out.stdout)
        return report

    def ferry(self, dataset, source_bucket, workers, destination_bucket=None, namespace=None):
        """One ferry iteration with 1 coordinator and `workers` worker processes."""
        self.runs += 1
        destination_bucket = destination_bucket or self.dst.bucket(
            f"ferry{workers}-{dataset}-{self.runs}")
        namespace = namespace or f"bench-{dataset}-{self.runs}"
        config = self.config(namespace, dataset, source_bucket, destination_bucket)
        window = Window(self)
        procs, ports = [], []
        for i in range(workers):
            port = free_port()
            ports.append(port)
            procs.append(Process(f"worker{i + 1}", [
                FERRY, "worker", "--config", config, "--id", f"w{i + 1}-{namespace}",
                "--metrics-listen", f"127.0.0.1:{port}", *self.args.ferry_args.split()],
                self.workdir / f"{namespace}-w{i + 1}.log"))
        profilers = self.profile(procs + [self.dst.proc], namespace)
        port = free_port()
        ports.append(port)
        coordinator = Process("coordinator", [
            FERRY, "coordinator", "--config", config, "--metrics-listen", f"127.0.0.1:{port}"],
            self.workdir / f"{namespace}-coordinator.log")
        procs.append(coordinator)
        finished = None
        deadline = window.started + self.args.timeout
        while finished is None:
            text = coordinator.text()
            finished = re.search(r"iteration finished.*", text)
            if finished:
                break
            if coordinator.proc.poll() is not None or time.time() > deadline:
                for p in procs:
                    p.stop(10)
                raise SystemExit(f"bench: ferry did not finish:\n{text[-3000:]}")
            time.sleep(0.02)
        window.close()
        redis_requests = sum(scrape(p, "ferry_redis_requests_total") for p in ports)
        stop_profiles(profilers)
        for p in procs:
            p.stop()
        line = finished.group(0)
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        copied = int(fields.get("copied", 0))
        return {
            "tool": "ferry", "workers": workers, "wall": window.wall,
            "copied": copied, "bytes": int(fields.get("bytes", 0)),
            "failed": int(fields.get("failed", 0)), "state": fields.get("state", "?"),
            "rss": [(p.name, p.peak_rss_kib) for p in procs],
            "cpu": sum(p.cpu for p in procs), "server_cpu": window.server_cpu,
            "cpu_by": [(p.name, p.cpu) for p in procs],
            "requests": window.requests(),
            "redis": redis_requests, "config": config, "namespace": namespace,
            "destination": destination_bucket,
        }

    def profile(self, procs, label):
        """With --profile, a `perf record` of each process, into the profile directory."""
        if not self.args.profile:
            return []
        return [subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384",
                                  "-o", self.args.profile / f"{label}-{p.name}.perf",
                                  "-p", str(p.proc.pid)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for p in procs]

    def finish(self, proc, window, what):
        """Waits for a one-shot tool to exit, closes its measuring window, and stops the
        benchmark if it timed out or failed."""
        if proc.wait(self.args.timeout) is None:
            proc.stop(10)
            raise SystemExit(f"bench: {what} did not finish in time")
        window.close()
        if proc.returncode != 0:
            raise SystemExit(f"bench: {what} failed:\n{proc.text()[-3000:]}")

    def sync(self, dataset, source_bucket, destination_bucket=None, state=None):
        """One `ferry sync` (coordinator and worker in one process, the embedded queue in a
        state dir: no Redis)."""
        self.runs += 1
        destination_bucket = destination_bucket or self.dst.bucket(
            f"sync-{dataset}-{self.runs}")
        state = state or self.workdir / f"state-{dataset}-{self.runs}"
        config = self.config(f"sync-{self.runs}", dataset, source_bucket, destination_bucket,
                             redis=False)
        window = Window(self)
        proc = Process("sync", [FERRY, "sync", f"src:{source_bucket}", f"dst:{destination_bucket}",
                                "--config", config, "--state-dir", state, "--json",
                                *self.args.ferry_args.split()],
                       self.workdir / f"sync-{self.runs}.log")
        profilers = self.profile([proc, self.dst.proc], f"sync-{dataset}-{self.runs}")
        self.finish(proc, window, "ferry sync")
        stop_profiles(profilers)
        summary = json.loads(next(line for line in reversed(proc.text().splitlines())
                                  if line.startswith("{")))
        state_bytes = (Path(state) / "state.redb").stat().st_size
        return {
            "tool": "ferry sync", "workers": None, "wall": window.wall,
            "copied": summary["copied"], "bytes": summary["bytes"],
            "rss": [("sync", proc.peak_rss_kib)], "requests": window.requests(), "redis": None,
            "cpu": proc.cpu, "server_cpu": window.server_cpu,
            "destination": destination_bucket, "config": config, "state": state,
            "state_bytes": state_bytes,
        }

    def rclone_env(self):
        """rclone's environment: remotes `src` and `dst` for the two Garage servers."""
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env["RCLONE_CONFIG"] = str(self.workdir / "rclone.conf")
        for name, g in (("SRC", self.src), ("DST", self.dst)):
            env.update({
                f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                f"RCLONE_CONFIG_{name}_ENDPOINT": g.url,
                f"RCLONE_CONFIG_{name}_REGION": "garage",
                f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": g.access_key,
                f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": g.secret_key,
                f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
            })
        return env

    def rclone(self, dataset, source_bucket, destination_bucket=None):
        self.runs += 1
        destination_bucket = destination_bucket or self.dst.bucket(
            f"rclone-{dataset}-{self.runs}")
        env = self.rclone_env()
        window = Window(self)
        proc = Process("rclone", ["rclone", "sync", f"src:{source_bucket}",
                                  f"dst:{destination_bucket}", *RCLONE_FLAGS,
                                  "--stats", "0", "--log-level", "NOTICE"],
                       self.workdir / f"rclone-{self.runs}.log", env=env)
        self.finish(proc, window, "rclone")
        requests = window.requests()
        copied = requests.get("PutObject", 0) + requests.get("CompleteMultipartUpload", 0)
        return {
            "tool": "rclone", "workers": None, "wall": window.wall, "copied": copied,
            "rss": [("rclone", proc.peak_rss_kib)], "requests": requests, "redis": None,
            "cpu": proc.cpu, "server_cpu": window.server_cpu,
            "destination": destination_bucket,
        }


def stop_profiles(profilers):
    """Ends `perf record` runs (a recording whose process already exited has ended)."""
    for p in profilers:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        p.wait()


def fmt_requests(requests):
    return ", ".join(f"{op} {n}" for op, n in sorted(requests.items(), key=lambda x: -x[1]))


def fmt_rss(rss):
    return " + ".join(f"{name} {kib / 1024:.0f}" for name, kib in rss if kib is not None)


def table(title, info, rows, ratio_of):
    """A Markdown table; `ratio_of` names the column the ferry/rclone ratio is taken of."""
    rclone = [r for r in rows if r["tool"] == "rclone"]
    base = statistics.median(r[ratio_of] for r in rclone) if rclone else None
    out = [f"### {title}", "",
           f"{info['objects']} objects, {info['bytes'] / 1e6:.0f} MB.", "",
           "| tool | workers | wall s | objects/s | MB/s | ferry/rclone | CPU s | CPU ms/object "
           "| servers' CPU s: source / destination / Redis | peak RSS MiB | S3 requests | Redis round trips per object |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r[ratio_of] / base:.2f}x" if base and r["tool"] != "rclone" else ""
        redis = (f"{r['redis'] / r['copied']:.2f}" if r["redis"] is not None and r["copied"]
                 else ("—" if r["redis"] is None else f"{r['redis']:.0f} in all"))
        ops = f"{r['ops']:.0f}" if r["ops"] >= 10 else f"{r['ops']:.2f}"
        per_object = f"{r['cpu'] * 1000 / info['objects']:.2f}"
        if len(r.get("cpu_by", [])) > 1:
            per_object += " (" + ", ".join(
                f"{name} {cpu * 1000 / info['objects']:.2f}" for name, cpu in r["cpu_by"]) + ")"
        out.append(
            f"| {r['tool']} | {r['workers'] or ''} | {r['wall']:.2f} | {ops} "
            f"| {r['mbps']:.1f} | {ratio} | {r['cpu']:.1f} "
            f"| {per_object} | {r['server_cpu']} "
            f"| {fmt_rss(r['rss'])} | {fmt_requests(r['requests'])} | {redis} |")
    for r in rows:
        if r.get("state_bytes"):
            out.append(f"\nferry sync's state dir after the copy: {r['state_bytes']} bytes, "
                       f"{r['state_bytes'] / info['objects']:.0f} bytes per object.")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="small,medium,large",
                    help="comma-separated: small, medium, large (default: all three)")
    ap.add_argument("--workers", default="1,2", help="ferry worker counts (default 1,2)")
    ap.add_argument("--tools", default="ferry,rclone",
                    help="comma-separated: ferry (coordinator + worker processes on Redis), "
                         "sync (`ferry sync`, the embedded queue, one process), rclone "
                         "(default ferry,rclone)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every tool (default 1)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of each dataset, for a quick run (default 1)")
    ap.add_argument("--diff-keys", type=int, default=10_000_000,
                    help="keys for the diff benchmark; 0 skips it (default 10,000,000)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per copy run")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    ap.add_argument("--ferry-args", default="",
                    help="extra flags for each `ferry worker`, e.g. --ferry-args='--concurrency 64'")
    ap.add_argument("--profile", type=Path,
                    help="record ferry's workers (or `ferry sync`) and the destination Garage with `perf record` "
                         "into this directory")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in ("small", "medium", "large"):
            ap.error(f"--datasets: unknown dataset {d!r} (small, medium, large)")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        ap.error(f"--workers: {args.workers!r} is not a comma-separated list of numbers")
    if any(w < 1 for w in workers) or args.repeat < 1:
        ap.error("--workers and --repeat must be at least 1")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ("ferry", "sync", "rclone"):
            ap.error(f"--tools: unknown tool {t!r} (ferry, sync, rclone)")

    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    report = [
        "## Run", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"{platform.platform()}",
        f"- ferry: {run([FERRY, '--version']).strip()} (release build); "
        f"{run(['rclone', 'version']).splitlines()[0]}; "
        f"{run(['garage', '--version']).strip()}",
        f"- command: `{shlex.join(['bench/run', *sys.argv[1:]])}`",
        f"- rclone flags: `sync {' '.join(RCLONE_FLAGS)}`",
        "", "ferry/rclone is the ratio of objects/s (small, medium) or MB/s (large); "
        "above 1 ferry is faster. Each run copies into a new, empty destination Garage "
        "(Garage stores a block once per server, so a later run would otherwise skip writes "
        "an earlier one made). S3 requests are counted by the two Garage servers. "
        "Peak RSS is each process's own (wait4). CPU s is the tool's processes' user + "
        "system time; servers' CPU s is what the two Garage servers and Redis used meanwhile. "
        "On a 2-core machine the servers and the tool share the cores, so CPU per object "
        "decides throughput.", ""]
    bench = Bench(args, workdir)
    failures = []
    try:
        for dataset in datasets:
            source, info = bench.seed(dataset)
            rows, again_rows = [], []
            for _ in range(args.repeat):
                order = ([("ferry", workers[0])] if "ferry" in tools else []) + \
                        ([("sync", None)] if "sync" in tools else []) + \
                        ([("rclone", None)] if "rclone" in tools else []) + \
                        ([("ferry", w) for w in workers[1:]] if "ferry" in tools else [])
                for tool, w in order:
                    log(f"bench: {dataset}: {tool} {w or ''}")
                    bench.fresh_destination()
                    r = (bench.ferry(dataset, source, w) if tool == "ferry"
                         else bench.sync(dataset, source) if tool == "sync"
                         else bench.rclone(dataset, source))
                    config = r.get("config") or bench.config("verify", "v", source, source)
                    check = bench.verify(config, source, r["destination"])
                    if not (check["missing"] == check["extra"] == check["different"] == 0):
                        failures.append(f"{dataset}/{tool} {w or ''}: {check}")
                    r["ops"] = info["objects"] / r["wall"]
                    r["mbps"] = info["bytes"] / 1e6 / r["wall"]
                    r["verified"] = check
                    rows.append(r)
                    log(f"bench:   {r['wall']:.2f} s, verified {check['objects']} objects "
                        f"({check['etag_equal']} by ETag, {check['content_compared']} read)")
                    if dataset == "small":
                        again_rows.append(again(bench, source, r))
            ratio_of = "mbps" if dataset == "large" else "ops"
            report.append(table(f"{dataset}", info, rows, ratio_of))
            if again_rows:
                report.append(
                    "### small, nothing changed\n\n"
                    "Each tool run again, right after its copy, into the destination it filled."
                    "\n\n| tool | wall s | objects copied | S3 requests |\n|---|---|---|---|\n"
                    + "".join(again_rows))
        if args.diff_keys:
            report.append(diff_bench(args.diff_keys))
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"bench: work directory kept: {workdir}")
    text = "\n".join(report)
    if failures:
        text += "\n**VERIFICATION FAILED**:\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if failures else 0


def again(bench, source, r):
    """The same tool again into the destination it just filled: a table row."""
    log(f"bench: small, no change: {r['tool']} {r['workers'] or ''}")
    if r["tool"] == "ferry sync":
        again = bench.sync("small", source, r["destination"], r["state"])
        name = "ferry sync"
    elif r["tool"] == "ferry":
        again = bench.ferry("small", source, r["workers"], r["destination"], r["namespace"])
        name = f"ferry, {r['workers']} worker(s)"
    else:
        again = bench.rclone("small", source, r["destination"])
        again["copied"] = again["requests"].get("PutObject", 0)
        name = "rclone"
    if again.get("state_bytes"):
        # The rerun compacted the state file at start: what the state holds, settled.
        name += f" (state dir after it: {again['state_bytes'] / max(r['copied'], 1):.0f} bytes/object)"
    return (f"| {name} | {again['wall']:.2f} | {again['copied']} "
            f"| {fmt_requests(again['requests'])} |\n")


def diff_bench(keys):
    out = ["### Listing diff alone (one core)", "",
           "Merge-join and decision table over synthetic listings fed a page (1,000 keys) at "
           "a time; 1 % of keys missing and 1 % changed at the destination. The seconds "
           "spent generating the pages are not counted in keys/s.", "",
           "| keys | seconds in the diff | keys/s | seconds with generation | peak RSS MiB |",
           "|---|---|---|---|---|"]
    for n in sorted({max(keys // 10, 1), keys}):
        log(f"bench: diff over {n} keys")
        r = json.loads(run([FERRY_BENCH, "diff", "--keys", str(n)]))
        out.append(f"| {n:,} | {r['diff_seconds']:.2f} | {r['keys_per_second']:,.0f} "
                   f"| {r['seconds']:.2f} | {r['peak_rss_kib'] / 1024:.1f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
