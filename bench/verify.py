#!/usr/bin/env python3
"""`ferry verify` beside `rclone check`, on the same two real Garage servers and buckets.

Run it through `bench/verify`, which installs what is missing and builds ferry in release
mode. For each dataset it seeds the source Garage (ferry-bench's datasets: `small` is 20,000
objects of 4 KiB in 100 directories, `flat` is keys in one flat prefix), copies it to a fresh
destination Garage with `ferry sync`, then times, one after the other on that pair:

- `ferry verify SRC DST` beside `rclone check --checksum` (sizes and hashes from the
  listings: both compare ETags);
- `ferry verify --deep` beside `rclone check --download` (both read every object on both
  sides).

It prints, per run: wall seconds, the tool's own CPU seconds and CPU per object, its peak
RSS, the S3 requests the two servers answered, and what it found. Ratios are rclone's wall
time over ferry's (above 1, ferry is faster).
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from bench import FERRY, Bench, Process, Window, fmt_requests, log, run


def timed(bench, name, cmd, env=None):
    """Runs `cmd` to its end in a measured window: wall, CPU, peak RSS, requests, output."""
    window = Window(bench)
    proc = Process(name, cmd, bench.workdir / f"{name}-{bench.runs}.log", env=env)
    bench.runs += 1
    code = proc.wait()
    window.close()
    return {"name": name, "code": code, "wall": window.wall, "cpu": proc.cpu,
            "rss": proc.peak_rss_kib, "requests": window.requests(), "text": proc.text(),
            "server_cpu": window.server_cpu}


def ferry_found(text):
    summary = json.loads(next(l for l in reversed(text.splitlines()) if '"summary"' in l))
    v = summary["verdicts"]
    return ", ".join(f"{k} {n}" for k, n in v.items() if n) or "nothing"


def rclone_found(text):
    lines = [l for l in text.splitlines() if "matching files" in l or "differences found" in l
             or "files missing" in l]
    return "; ".join(l.split(": ", 2)[-1].strip() for l in lines) or text.strip()[-200:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="small",
                    help="comma-separated: small (20,000 objects), flat (1,000,000 keys in one "
                         "prefix, at --scale 1) (default small)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each dataset")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.ferry_args, args.profile, args.timeout = "", None, 3600
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in ("small", "flat"):
            ap.error(f"--datasets: unknown dataset {d!r} (small, flat)")
    workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-verify-"))
    report = [
        "## verify beside rclone check", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}",
        f"- ferry: {run([FERRY, '--version']).strip()}; "
        f"{run(['rclone', 'version']).splitlines()[0]}",
        f"- command: `{shlex.join(['bench/verify', *sys.argv[1:]])}`", "",
        "| dataset | objects | tool | wall s | rclone/ferry | CPU s | CPU ms/object | "
        "peak RSS MiB | S3 requests | found |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    bench = Bench(args, workdir)
    try:
        for dataset in datasets:
            source, info = bench.seed(dataset)
            bench.fresh_destination()
            copy = bench.sync(dataset, source)
            config, dest = copy["config"], copy["destination"]
            env = bench.rclone_env()
            pairs = [
                ("verify", [FERRY, "verify", f"src:{source}", f"dst:{dest}", "--config", config,
                            "--json"],
                 "rclone check --checksum", ["rclone", "check", f"src:{source}", f"dst:{dest}",
                                             "--checksum", "--checkers", "32", "--fast-list"]),
                ("verify --deep", [FERRY, "verify", f"src:{source}", f"dst:{dest}", "--config",
                                   config, "--json", "--deep"],
                 "rclone check --download", ["rclone", "check", f"src:{source}", f"dst:{dest}",
                                             "--download", "--checkers", "32", "--fast-list"]),
            ]
            for ferry_name, ferry_cmd, rclone_name, rclone_cmd in pairs:
                log(f"bench: {dataset}: {ferry_name}")
                f = timed(bench, "ferry", [str(c) for c in ferry_cmd])
                log(f"bench: {dataset}: {rclone_name}")
                r = timed(bench, "rclone", rclone_cmd, env=env)
                if f["code"] != 0 or r["code"] != 0:
                    raise SystemExit(f"bench: a check failed: ferry {f['code']}, rclone "
                                     f"{r['code']}\n{f['text'][-2000:]}\n{r['text'][-2000:]}")
                n = info["objects"]
                for name, m, found in ((ferry_name, f, ferry_found(f["text"])),
                                       (rclone_name, r, rclone_found(r["text"]))):
                    ratio = f"{r['wall'] / f['wall']:.2f}" if m is f else ""
                    report.append(
                        f"| {dataset} | {n} | {name} | {m['wall']:.1f} | {ratio} | "
                        f"{m['cpu']:.1f} | {1000 * m['cpu'] / n:.3f} | {m['rss'] / 1024:.0f} | "
                        f"{fmt_requests(m['requests'])} | {found} |")
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
