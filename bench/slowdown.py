#!/usr/bin/env python3
"""A SlowDown episode: one prefix's writes refused for 40 s while other prefixes are copied.

Run it through `bench/slowdown`, which installs what is missing and builds the release
binaries. A fault proxy (ferry-faultproxy) in front of the destination Garage answers 503
SlowDown to every write under `hot/` for the episode, and lets everything else through. Each
tool copies the same source into its own fresh destination bucket, starting as the episode
starts: ferry (1 coordinator, 2 worker processes), then rclone without and with --tpslimit.
The proxy sees every request, so both tools are measured alike. Printed per tool:

- SlowDown answers per hot object over the episode (mean and worst);
- writes per second to the hot prefix in the episode's last 15 s;
- seconds from the episode's end until every hot object is copied;
- the other prefixes' objects per second during the episode.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the Garage and process helpers)

ROOT = bench.ROOT
PROXY = ROOT / "target" / "release" / "ferry-faultproxy"


def control(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req, timeout=10).read() or b"null")


def s3(garage):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=garage.url, region_name="garage",
                        aws_access_key_id=garage.access_key,
                        aws_secret_access_key=garage.secret_key,
                        config=Config(s3={"addressing_style": "path"},
                                      max_pool_connections=32))


def count(client, bucket, prefix):
    n, token = 0, None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = client.list_objects_v2(**kw)
        n += page.get("KeyCount", 0)
        if not page.get("IsTruncated"):
            return n
        token = page["NextContinuationToken"]


def seed(client, bucket, hot, cold_prefixes, cold):
    from concurrent.futures import ThreadPoolExecutor
    keys = [f"hot/{i:05}" for i in range(hot)]
    keys += [f"{p}{i:05}" for p in cold_prefixes for i in range(cold)]
    body = os.urandom(4096)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))
    return len(keys)


class Episode:
    """The proxy's rules for one run, and what it saw."""

    def __init__(self, control_port, bucket, seconds):
        self.port, self.bucket, self.seconds = control_port, bucket, seconds

    def start(self):
        control(self.port, "PUT", "/rules", [
            {"name": "slowdown",
             "match": {"method": "PUT", "path_prefix": f"/{self.bucket}/hot/"},
             "action": {"kind": "status", "status": 503, "code": "SlowDown"}}])
        self.started_ms = control(self.port, "GET", "/now")["ms"]
        self.started = time.time()

    def end(self):
        control(self.port, "PUT", "/rules", [])
        self.ended_ms = control(self.port, "GET", "/now")["ms"]
        self.ended = time.time()

    def measure(self, hot, done_after):
        events = control(self.port, "GET", f"/events?since={self.started_ms}")
        prefix = f"/{self.bucket}/"
        refused = {}
        late_writes = others = 0
        for e in events:
            if not e["path"].startswith(prefix) or e["method"] != "PUT":
                continue
            key = e["path"][len(prefix):]
            if e["at_ms"] > self.ended_ms:
                continue
            if e.get("rule") == "slowdown":
                refused[key] = refused.get(key, 0) + 1
            if key.startswith("hot/") and e["at_ms"] >= self.ended_ms - 15_000:
                late_writes += 1
            if not key.startswith("hot/") and not key.startswith(".ferry-probe") \
                    and e["status"] == 200 and "uploadId" not in e["query"]:
                others += 1
        seconds = (self.ended_ms - self.started_ms) / 1000
        total = sum(refused.values())
        return {
            "refused": total,
            "per_object": total / hot,
            "worst": max(refused.values(), default=0),
            "late_writes_per_s": late_writes / 15,
            "recovery": done_after,
            "others_per_s": others / seconds,
            "others": others,
        }


def wait_all(client, bucket, hot, others, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if count(client, bucket, "hot/") == hot and count(client, bucket, "") >= hot + others:
            return time.time()
        time.sleep(0.2)
    return None


def run_ferry(b, workdir, source, dest, proxy_url, episode, hot, others, args):
    namespace = f"slow-{dest}"
    endpoints = (
        f'[endpoints.src]\nurl = "{b.src.url}"\nregion = "garage"\npath_style = true\n'
        f'access_key_id = "{b.src.access_key}"\nsecret_access_key = "{b.src.secret_key}"\n\n'
        f'[endpoints.dst]\nurl = "{proxy_url}"\nregion = "garage"\npath_style = true\n'
        f'access_key_id = "{b.dst.access_key}"\nsecret_access_key = "{b.dst.secret_key}"\n\n')
    config = workdir / f"{namespace}.toml"
    config.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:{b.redis_port}"\nnamespace = "{namespace}"\n\n'
        f'{endpoints}[[rules]]\nname = "slow"\nstop = "once"\n'
        f'source = {{ endpoint = "src", bucket = "{source}" }}\n'
        f'destination = {{ endpoint = "dst", bucket = "{dest}" }}\n')
    episode.start()
    procs = [bench.Process(f"w{i}", [bench.FERRY, "worker", "--config", config, "--id",
                                     f"w{i}-{namespace}", *args.ferry_args.split()],
                           workdir / f"{namespace}-w{i}.log") for i in range(2)]
    coordinator = bench.Process("coordinator", [bench.FERRY, "coordinator", "--config", config],
                                workdir / f"{namespace}-coordinator.log")
    return procs + [coordinator]


def run_rclone(b, workdir, source, dest, proxy_url, episode, tpslimit):
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env["RCLONE_CONFIG"] = str(workdir / "rclone.conf")
    for name, g, url in (("SRC", b.src, b.src.url), ("DST", b.dst, proxy_url)):
        env.update({
            f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
            f"RCLONE_CONFIG_{name}_ENDPOINT": url, f"RCLONE_CONFIG_{name}_REGION": "garage",
            f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": g.access_key,
            f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": g.secret_key,
            f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true",
        })
    flags = [f for f in bench.RCLONE_FLAGS]
    if tpslimit:
        flags += ["--tpslimit", str(tpslimit)]
    episode.start()
    return [bench.Process("rclone", ["rclone", "sync", f"src:{source}", f"dst:{dest}", *flags,
                                     "--stats", "0", "--log-level", "ERROR"],
                          workdir / f"rclone-{dest}.log", env=env)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episode", type=float, default=40, help="seconds of SlowDown (40)")
    ap.add_argument("--hot", type=int, default=300, help="objects under hot/ (300)")
    ap.add_argument("--cold", type=int, default=2000, help="objects under each other prefix")
    ap.add_argument("--tpslimit", type=int, default=100, help="rclone's --tpslimit (100)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--ferry-args", default="", help="extra flags for each `ferry worker`")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ferry-slowdown-"))
    args.scale, args.profile = 1.0, None
    b = bench.Bench(args, workdir)
    b.fresh_destination()
    listen, control_port = bench.free_port(), bench.free_port()
    proxy = bench.Process("proxy", [PROXY, "--listen", f"127.0.0.1:{listen}",
                                    "--upstream", f"127.0.0.1:{b.dst.s3}",
                                    "--control", f"127.0.0.1:{control_port}"],
                          workdir / "proxy.log")
    bench.wait_port(control_port, "the fault proxy")
    proxy_url = f"http://127.0.0.1:{listen}"
    rows = []
    try:
        source = b.src.bucket("slow-src")
        cold_prefixes = ["alpha/", "beta/", "gamma/"]
        total = seed(s3(b.src), source, args.hot, cold_prefixes, args.cold)
        others = total - args.hot
        bench.log(f"slowdown: seeded {total} objects ({args.hot} under hot/)")
        dst = s3(b.dst)
        for tool, tps in [("ferry", None), ("rclone", None), ("rclone", args.tpslimit)]:
            dest = b.dst.bucket(f"{tool}{tps or ''}-dst")
            episode = Episode(control_port, dest, args.episode)
            bench.log(f"slowdown: {tool} {f'--tpslimit {tps}' if tps else ''}")
            b.settle()
            procs = (run_ferry(b, workdir, source, dest, proxy_url, episode, args.hot, others,
                               args) if tool == "ferry"
                     else run_rclone(b, workdir, source, dest, proxy_url, episode, tps))
            threading.Timer(args.episode, episode.end).start()
            time.sleep(args.episode + 0.5)
            done = wait_all(dst, dest, args.hot, others, args.timeout)
            for p in procs:
                if p.name == "rclone" and p.wait(args.timeout) is None:
                    p.stop(10)
                else:
                    p.stop(30)
            m = episode.measure(args.hot, None if done is None else done - episode.ended)
            m["tool"] = tool if not tps else f"{tool} --tpslimit {tps}"
            m["copied"] = count(dst, dest, "")
            m["cpu_ms_per_object"] = 1000 * sum(p.cpu or 0 for p in procs) / total
            rows.append(m)
            bench.log(f"slowdown:   {m}")
    finally:
        proxy.stop()
        b.close()
    out = [f"### SlowDown on one prefix for {args.episode:.0f} s",
           "",
           f"{args.hot} objects under `hot/` (writes refused with 503 SlowDown during the "
           f"episode), {len(cold_prefixes)} other prefixes of {args.cold} objects copied "
           "meanwhile; 4 KiB objects, two Garage servers, a fault proxy in front of the "
           "destination that counts every request.",
           "",
           "| tool | SlowDown answers | per hot object (worst) | hot writes/s, last 15 s "
           "| s from episode end to done | other prefixes during the episode, objects/s "
           "(copied of those) | objects copied | tool CPU ms/object |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rec = "never" if r["recovery"] is None else f"{r['recovery']:.1f}"
        out.append(f"| {r['tool']} | {r['refused']} | {r['per_object']:.2f} ({r['worst']}) "
                   f"| {r['late_writes_per_s']:.2f} | {rec} | {r['others_per_s']:.0f} "
                   f"({r['others']} of {others}) "
                   f"| {r['copied']} | {r['cpu_ms_per_object']:.2f} |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
