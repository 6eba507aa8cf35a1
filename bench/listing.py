#!/usr/bin/env python3
"""Listing and diffing one flat prefix: ferry in 1, 4 and 16 key ranges against rclone.

Run it through `bench/listing`, which installs what is missing and builds the release
binaries. It seeds N empty objects with hashed names into one flat prefix of a Garage bucket
(`ferry-bench seed --dataset flat`), and gives the bucket a second name, so the two sides
are the same objects under two bucket names: what each tool measures is listing both sides
and diffing them, with nothing to copy. Then, in turn:

- `ferry coordinator` for one iteration (`stop = "once"`) of a rule from one name to the
  other, with `list_ranges` = each value of --ranges (1 is one listing stream per side);
  with --next, then that rule's next iteration, whose ranges are cut at the marks the first
  left (no sampling requests);
- `rclone check --fast-list` between the two names.

Each run is checked: ferry's iteration record lists and skips all N keys, and rclone finds
0 differences over N files. Requests are counted by Garage (its /metrics).
"""

import argparse
import asyncio
import json
import subprocess
import threading
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the copy benchmark's servers and process helpers)
from bench import FERRY, FERRY_BENCH, Garage, Process, free_port, log, run, wait_port  # noqa: E402


class DelayProxy:
    """A TCP proxy in front of the S3 port that holds each request `ms` milliseconds before
    passing it on: the round trip of a distant endpoint, for both tools alike."""

    def __init__(self, target_port, ms):
        self.target, self.delay = target_port, ms / 1000
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait()

    def _serve(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _client(self, reader, writer):
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target)

        async def pipe(src, dst, delay):
            try:
                while data := await src.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer, self.delay),
                             pipe(upstream_reader, writer, 0))


class Listing:
    def __init__(self, workdir, keys, latency_ms=0):
        self.workdir, self.keys = workdir, keys
        garage = bench.shutil.which("garage") or str(Path.home() / ".cargo/bin/garage")
        self.redis_port = free_port()
        self.redis = Process("redis", ["redis-server", "--port", str(self.redis_port),
                                       "--save", "", "--appendonly", "no"],
                             workdir / "redis.log")
        wait_port(self.redis_port, "redis-server")
        self.garage = Garage(garage, workdir, "garage")
        self.bucket = self.garage.bucket("flat")
        self.garage.cli("bucket", "alias", "flat", "flat-mirror")
        self.runs = 0
        self.latency_ms = latency_ms
        self.proxy = DelayProxy(self.garage.s3, latency_ms) if latency_ms else None

    def url(self):
        """Where the tools reach Garage: through the delaying proxy, if there is one."""
        return f"http://127.0.0.1:{self.proxy.port}" if self.proxy else self.garage.url

    def close(self):
        self.garage.proc.stop()
        self.redis.stop()

    def seed(self):
        config = self.config("seed", 1, self.garage.url)
        log(f"bench: seeding {self.keys} empty objects into one flat prefix")
        out = run([FERRY_BENCH, "seed", "--config", config, "--endpoint", "src",
                   "--bucket", "flat", "--dataset", "flat", "--scale", str(self.keys / 1e6),
                   "--concurrency", "64"])
        info = json.loads(out)
        log(f"bench: seeded {info['objects']} objects in {info['seconds']:.0f} s")
        if info["objects"] != self.keys:
            raise SystemExit(f"bench: seeded {info['objects']} objects, not {self.keys}")

    def config(self, namespace, ranges, url=None):
        g = self.garage
        path = self.workdir / f"{namespace}.toml"
        endpoints = "".join(
            f'[endpoints.{name}]\nurl = "{url or self.url()}"\nregion = "garage"\npath_style = true\n'
            f'access_key_id = "{g.access_key}"\nsecret_access_key = "{g.secret_key}"\n\n'
            for name in ("src", "dst"))
        path.write_text(
            f'[redis]\nurl = "redis://127.0.0.1:{self.redis_port}"\n'
            f'namespace = "{namespace}"\n\n{endpoints}'
            f'[[rules]]\nname = "flat"\nstop = "once"\n'
            f'list_ranges = {ranges}\nlist_range_min_keys = 1000\n'
            'source = { endpoint = "src", bucket = "flat" }\n'
            'destination = { endpoint = "dst", bucket = "flat-mirror" }\n')
        return path

    def cpu(self):
        return self.garage.proc.cpu_so_far(), self.redis.cpu_so_far()

    def settle(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            before = self.cpu()
            time.sleep(1)
            after = self.cpu()
            if sum(after) - sum(before) < 0.03:
                return
        log("bench: the servers did not go idle; measuring anyway")

    def measured(self, name, cmd, env=None):
        self.settle()
        self.runs += 1
        requests_before = self.garage.requests()
        cpu_before = self.cpu()
        started = time.time()
        proc = Process(name, cmd, self.workdir / f"{name}-{self.runs}.log", env=env)
        if proc.wait(3600) is None:
            proc.stop()
            raise SystemExit(f"bench: {name} did not finish within an hour")
        wall = time.time() - started
        cpu_after = self.cpu()
        requests = bench.request_delta([self.garage], [requests_before])
        if proc.returncode != 0:
            raise SystemExit(f"bench: {name} exited {proc.returncode}:\n{proc.text()[-3000:]}")
        return {
            "wall": wall, "cpu": proc.cpu, "rss_kib": proc.peak_rss_kib,
            "garage_cpu": cpu_after[0] - cpu_before[0], "redis_cpu": cpu_after[1] - cpu_before[1],
            # rclone lists with ListObjects (v1) on a provider it does not know.
            "lists": requests.get("ListObjectsV2", 0) + requests.get("ListObjects", 0),
            "other": {k: v for k, v in requests.items()
                      if k not in ("ListObjectsV2", "ListObjects")},
            "log": proc.text(),
        }

    def ferry(self, ranges, namespace=None):
        """One iteration; with `namespace`, the next iteration of that earlier run (its ranges
        cut at the marks the earlier one left)."""
        n = 2 if namespace else 1
        namespace = namespace or f"run{self.runs + 1}"
        config = self.config(namespace, ranges)
        r = self.measured(f"ferry-{ranges}", [FERRY, "coordinator", "--config", config])
        fields = run(["redis-cli", "-p", str(self.redis_port), "hgetall",
                      f"{namespace}:{{flat}}:it:{n}"]).split("\n")
        record = dict(zip(fields[0::2], fields[1::2]))
        listed, skipped = int(record.get("listed", 0)), int(record.get("skipped", 0))
        if (listed, skipped) != (self.keys, self.keys) or "planned" in record:
            raise SystemExit(f"bench: ferry's iteration listed {listed}, skipped {skipped} "
                             f"of {self.keys}: {record}")
        used = len(json.loads(record.get("ranges:1", "[]"))) + 1
        how = ", next iteration, from marks" if n == 2 else ""
        r.update(tool="ferry", ranges=f"{ranges} ({used} used{how})", namespace=namespace)
        return r

    def rclone(self):
        env = {k: v for k, v in bench.os.environ.items() if k != "AWS_CA_BUNDLE"}
        env["RCLONE_CONFIG"] = str(self.workdir / "rclone.conf")
        g = self.garage
        env.update({
            "RCLONE_CONFIG_G_TYPE": "s3", "RCLONE_CONFIG_G_PROVIDER": "Other",
            "RCLONE_CONFIG_G_ENDPOINT": self.url(), "RCLONE_CONFIG_G_REGION": "garage",
            "RCLONE_CONFIG_G_ACCESS_KEY_ID": g.access_key,
            "RCLONE_CONFIG_G_SECRET_ACCESS_KEY": g.secret_key,
            "RCLONE_CONFIG_G_FORCE_PATH_STYLE": "true",
        })
        r = self.measured("rclone", ["rclone", "check", "g:flat", "g:flat-mirror", "--fast-list",
                                     "--checkers", "32", "--log-level", "NOTICE"], env=env)
        if f"0 differences found" not in r["log"] or f"{self.keys} matching files" not in r["log"]:
            raise SystemExit(f"bench: rclone check did not match {self.keys} files:\n{r['log']}")
        r.update(tool="rclone", ranges="")
        return r


def other(r):
    return "".join(f" + {n} {op}" for op, n in sorted(r["other"].items()))


def table(keys, rows):
    base = min(r["wall"] for r in rows if r["tool"] == "rclone")
    out = [f"| tool | key ranges | wall s | vs rclone | own CPU s | CPU µs/key | Garage CPU s "
           f"| Redis CPU s | LIST requests | peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['wall'] / base:.2f}x" if r["tool"] != "rclone" else "1.00x"
        out.append(
            f"| {r['tool']} | {r['ranges']} | {r['wall']:.1f} | {ratio} | {r['cpu']:.1f} "
            f"| {r['cpu'] / keys * 1e6:.1f} | {r['garage_cpu']:.1f} | {r['redis_cpu']:.1f} "
            f"| {r['lists']}{other(r)} | {r['rss_kib'] / 1024:.0f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1,000,000)")
    ap.add_argument("--ranges", default="1,4,16",
                    help="comma-separated list_ranges values for ferry (default 1,4,16)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every run (default 1)")
    ap.add_argument("--latency-ms", type=int, default=0,
                    help="hold each request this long on its way to Garage, as a distant "
                         "endpoint would (default 0)")
    ap.add_argument("--next", action="store_true",
                    help="after each ferry run of more than one range, run its next iteration "
                         "too (ranges cut at the marks the first left, no sampling)")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args()
    try:
        ranges = [int(r) for r in args.ranges.split(",")]
    except ValueError:
        ap.error(f"--ranges: {args.ranges!r} is not a comma-separated list of numbers")
    if any(not 1 <= r <= 256 for r in ranges) or args.keys < 1 or args.repeat < 1:
        ap.error("--ranges must be 1 to 256, --keys and --repeat at least 1")
    with tempfile.TemporaryDirectory(prefix="ferry-listing-") as tmp:
        listing = Listing(Path(tmp), args.keys, args.latency_ms)
        try:
            listing.seed()
            rows = []
            for _ in range(args.repeat):
                for r in ranges:
                    rows.append(listing.ferry(r))
                    log(f"bench: ferry, {r} range(s): {rows[-1]['wall']:.1f} s")
                    if args.next and r > 1:
                        rows.append(listing.ferry(r, rows[-1]["namespace"]))
                        log(f"bench: ferry, {r} range(s), next: {rows[-1]['wall']:.1f} s")
                rows.append(listing.rclone())
                log(f"bench: rclone check: {rows[-1]['wall']:.1f} s")
        finally:
            listing.close()
    report = "\n".join([
        f"## Listing and diffing {args.keys:,} keys in one flat prefix (Garage, one node"
        + (f", {args.latency_ms} ms added to each request)" if args.latency_ms else ")"),
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M')}; {run(['rclone', 'version']).splitlines()[0]}; "
        f"{bench.os.cpu_count()} cores",
        "- both sides are the same bucket under two names: each run lists both and diffs, "
        "with nothing to copy; ferry runs one coordinator iteration, rclone "
        "`check --fast-list --checkers 32`",
        "- own CPU is the tool's process alone (user + system); the servers share the cores",
        "",
        table(args.keys, rows),
    ])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
