#!/usr/bin/env python3
"""Groups a `perf record` profile's self time by crate (or C library), for "where the time
went": `bench/perf_crates.py FILE.perf [FILE.perf ...]` prints one table, a column per file.
Symbols are classified by their leading Rust path (`aws_sigv4::...` -> aws-sdk), libc's
allocator and memcpy by name, and everything in the kernel as `kernel`."""
import collections
import re
import subprocess
import sys

GROUPS = [
    ("aws-sdk (smithy, sigv4, endpoint, interceptors)", r"^(aws_|<aws_)"),
    ("hyper / http / h2", r"^(<?hyper|<?http|<?h2|<&str as http)"),
    ("tokio", r"^<?tokio"),
    ("redis client", r"^<?redis"),
    ("ferry's own code", r"^<?ferry"),
    ("tracing / metrics", r"^<?(tracing|metrics)"),
    ("regex", r"^<?regex"),
    ("hashing (sha2, md5, crc)", r"^<?(sha2|md5|md_5|crc|xxhash)"),
    ("malloc / free (libc)", r"(malloc|free|_int_|unlink_chunk|realloc|__rdl_|__rust_alloc|__rust_dealloc|cfree)"),
    ("memcpy / memmove / memcmp", r"(memcpy|memmove|memcmp|memset)"),
]


def profile(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "dso,symbol", "--stdio",
         "-g", "none"], capture_output=True, text=True, check=True).stdout
    share = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m[1]), m[2], m[3], m[4]
        if kind == "k" or dso.startswith("[kernel"):
            share["kernel"] += pct
            continue
        for name, pattern in GROUPS:
            if re.search(pattern, sym):
                share[name] += pct
                break
        else:
            share["other (std, core, alloc, futures, ...)"] += pct
    return share


def main():
    paths = sys.argv[1:]
    shares = [profile(p) for p in paths]
    names = sorted({n for s in shares for n in s}, key=lambda n: -shares[0].get(n, 0))
    print("| where | " + " | ".join(paths) + " |")
    print("|---|" + "---|" * len(paths))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{s.get(n, 0):.1f} %" for s in shares) + " |")


if __name__ == "__main__":
    main()
