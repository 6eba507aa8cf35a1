#!/usr/bin/env python3
"""Notification-to-replica latency of ferry's event paths, on real servers.

Run it through `bench/events`, which installs what is missing and builds ferry in release
mode. It starts Redis, a moto server for the source (which also delivers the S3 notifications
through its own SQS and SNS) and a moto server for the destination, then one `ferry run` with
two rules, both with `interval = "1h"`, so that no iteration runs while it measures:
- `sqs`: the source bucket notifies an SQS queue, which ferry long-polls;
- `webhook`: each PUT's S3 event record is posted to ferry's `--events-listen`
  (`POST /events/RULE`), as MinIO and Ceph RGW push them. (Moto's SNS delivers signed
  messages whose certificate is on sns.us-east-1.amazonaws.com, which ferry, rightly, cannot
  reach here to check them: see tests/security.rs for that path under a test authority.)

For each path it PUTs N objects at a steady rate, and a watcher lists the destination every
50 ms. A key's latency runs from its PUT's answer (the notification is sent then) to the
first listing that shows it at the destination: the whole path, notification delivery,
ferry's decision, its queue, the copy, and the listing's own delay. It prints, per path,
median, p99 and max, and ferry's own CPU per event; `ferry_event_lag_seconds` (event time
to ack, by ferry's clock) is shown beside it.
"""

import argparse
import json
import re
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3

from bench import free_port, log, wait_port

ROOT = Path(__file__).resolve().parent.parent
FERRY = Path(os.environ.get("FERRY_BIN", ROOT / "target" / "release" / "ferry"))
CREDS = dict(region_name="us-east-1", aws_access_key_id="testing",
             aws_secret_access_key="testing")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def histogram(metrics_port, rule):
    """ferry_event_lag_seconds of `rule`: (count, buckets as [(le, cumulative count)])."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    buckets, count = [], 0
    for line in text.splitlines():
        if not line.startswith("ferry_event_lag_seconds") or f'rule="{rule}"' not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        if name_labels.startswith("ferry_event_lag_seconds_bucket"):
            le = re.search(r'[{,]le="([^"]+)"', name_labels).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
        elif name_labels.startswith("ferry_event_lag_seconds_count"):
            count = float(value)
    return count, sorted(buckets)


def bucket_quantile(count, buckets, q):
    """The upper bound of the bucket holding quantile q."""
    for le, cumulative in buckets:
        if cumulative >= q * count:
            return le
    return float("inf")


class Watcher(threading.Thread):
    """Lists the destination every 50 ms and records when each key first appears."""

    def __init__(self, client, bucket, prefix, expected):
        super().__init__(daemon=True)
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.expected = expected
        self.seen = {}
        self.stop = False

    def run(self):
        while not self.stop and len(self.seen) < self.expected:
            # Everything up to the first key not yet seen is known: list from there.
            start = ""
            for i in range(self.expected):
                key = f"{self.prefix}{i:06d}"
                if key not in self.seen:
                    break
                start = key
            token = None
            while True:
                kw = dict(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1000)
                if token:
                    kw["ContinuationToken"] = token
                elif start:
                    kw["StartAfter"] = start
                page = self.client.list_objects_v2(**kw)
                now = time.time()
                for obj in page.get("Contents", []):
                    self.seen.setdefault(obj["Key"], now)
                if not page.get("IsTruncated"):
                    break
                token = page["NextContinuationToken"]
            time.sleep(0.05)


def push(port, rule, key, size, etag, sequence):
    """Posts the S3 event record of `key` to ferry's webhook, as MinIO and Ceph RGW do."""
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
              "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
              "eventName": "ObjectCreated:Put",
              "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": f"{rule}-src"},
                     "object": {"key": key, "size": size, "eTag": etag,
                                "sequencer": f"{sequence:016X}"}}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events/{rule}", method="POST",
        data=json.dumps({"Records": [record]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 200:
            raise SystemExit(f"bench: the webhook answered {answer.status}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000, help="objects PUT per path")
    parser.add_argument("--rate", type=float, default=25.0, help="PUTs per second")
    parser.add_argument("--paths", default="sqs,webhook", help="which paths to measure")
    parser.add_argument("--size", type=int, default=4096, help="bytes per object")
    args = parser.parse_args()
    if not FERRY.exists():
        raise SystemExit(f"bench: {FERRY} is missing; run bench/events (it builds it)")

    work = Path(tempfile.mkdtemp(prefix="ferry-events-bench-"))
    procs = []

    def start(name, cmd, env=None):
        out = open(work / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(p)
        return p

    try:
        redis_port, src_port, dst_port = free_port(), free_port(), free_port()
        start("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                        "--appendonly", "no"])
        start("moto-src", ["moto_server", "-H", "127.0.0.1", "-p", str(src_port)])
        start("moto-dst", ["moto_server", "-H", "127.0.0.1", "-p", str(dst_port)])
        for port, what in [(redis_port, "redis"), (src_port, "moto"), (dst_port, "moto")]:
            wait_port(port, what)
        src_url, dst_url = f"http://127.0.0.1:{src_port}", f"http://127.0.0.1:{dst_port}"
        s3 = boto3.client("s3", endpoint_url=src_url, **CREDS)
        d3 = boto3.client("s3", endpoint_url=dst_url, **CREDS)
        sqs = boto3.client("sqs", endpoint_url=src_url, **CREDS)
        paths = args.paths.split(",")
        listen, metrics = free_port(), free_port()

        rules = ""
        for path in paths:
            s3.create_bucket(Bucket=f"{path}-src")
            d3.create_bucket(Bucket=f"{path}-dst")
            if path == "sqs":
                queue = sqs.create_queue(QueueName="events")["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
                    "Attributes"]["QueueArn"]
                s3.put_bucket_notification_configuration(
                    Bucket="sqs-src", NotificationConfiguration={"QueueConfigurations": [
                        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
                events = f'{{ sqs = "{queue}" }}'
            elif path == "webhook":
                events = "{ webhook = true }"
            else:
                raise SystemExit(f"bench: unknown path {path!r} (sqs, webhook)")
            rules += (f'[[rules]]\nname = "{path}"\ninterval = "1h"\nevents = {events}\n'
                      f'source = {{ endpoint = "src", bucket = "{path}-src" }}\n'
                      f'destination = {{ endpoint = "dst", bucket = "{path}-dst" }}\n\n')
        endpoint = ('[endpoints.{0}]\nurl = "{1}"\nregion = "us-east-1"\npath_style = true\n'
                    'access_key_id = "testing"\nsecret_access_key = "testing"\n\n')
        config = work / "ferry.toml"
        config.write_text(f'[redis]\nurl = "redis://127.0.0.1:{redis_port}"\n\n'
                          + endpoint.format("src", src_url) + endpoint.format("dst", dst_url)
                          + rules)
        ferry = start("ferry", [str(FERRY), "run", "--config", str(config), "--workers", "2",
                                "--events-listen", f"127.0.0.1:{listen}",
                                "--metrics-listen", f"127.0.0.1:{metrics}"])
        wait_port(listen, "ferry's events listener")
        deadline = time.time() + 60
        while True:
            status = json.loads(subprocess.run(
                [str(FERRY), "status", "--config", str(config), "--json"],
                capture_output=True, text=True, check=True).stdout)
            if all(s["last_iterations"] for s in status["rules"]):
                break
            if time.time() > deadline:
                raise SystemExit("bench: the first iterations did not finish")
            time.sleep(0.2)

        body = os.urandom(args.size)
        results = []
        for path in paths:
            watcher = Watcher(d3, f"{path}-dst", "ev/", args.events)
            watcher.start()
            put_done = {}
            cpu_before = cpu_seconds(ferry.pid)
            began = time.time()
            for i in range(args.events):
                due = began + i / args.rate
                if due > time.time():
                    time.sleep(due - time.time())
                key = f"ev/{i:06d}"
                put = s3.put_object(Bucket=f"{path}-src", Key=key, Body=body)
                put_done[key] = time.time()
                if path == "webhook":
                    push(listen, path, key, len(body), put["ETag"].strip('"'), i + 1)
            watcher.join(timeout=120)
            watcher.stop = True
            cpu = cpu_seconds(ferry.pid) - cpu_before
            missing = [k for k in put_done if k not in watcher.seen]
            if missing:
                raise SystemExit(f"bench: {len(missing)} objects of {path} never arrived "
                                 f"(first: {missing[0]}); see {work}/ferry.log")
            lat = [watcher.seen[k] - put_done[k] for k in put_done]
            count, buckets = histogram(metrics, path)
            results.append(dict(
                path=path, events=len(lat), median=statistics.median(lat),
                p99=percentile(lat, 0.99), max=max(lat), cpu_ms=cpu * 1000 / len(lat),
                ferry_count=count, ferry_p50=bucket_quantile(count, buckets, 0.5),
                ferry_p99=bucket_quantile(count, buckets, 0.99)))
            log(f"bench: {path}: {len(lat)} events measured")

        print(f"\nNotification-to-replica latency, {args.events} objects of {args.size} B "
              f"per path at {args.rate:g}/s (moto source with its SQS; webhook records pushed as MinIO and RGW do; moto "
              f"destination, Redis; interval 1h, so no iteration ran)\n")
        print("| path | events | median s | p99 s | max s | ferry CPU ms/event | "
              "ferry_event_lag_seconds p50 / p99 (bucket bound) |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['path']} | {r['events']} | {r['median']:.3f} | {r['p99']:.3f} | "
                  f"{r['max']:.3f} | {r['cpu_ms']:.2f} | "
                  f"≤{r['ferry_p50']:g} / ≤{r['ferry_p99']:g} ({int(r['ferry_count'])} copies) |")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("FERRY_BENCH_KEEP"):
            log(f"bench: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
