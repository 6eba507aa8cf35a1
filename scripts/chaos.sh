#!/usr/bin/env bash
# Randomized fault schedules against a real cluster (testkit/src/chaos.rs): per run, a
# Redis with AOF, two Garage (or Ceph RGW) servers behind fault proxies, two coordinators and two workers
# (one in a network namespace when run as root), and 2 to 5 faults drawn from the seed:
# kill -9 or SIGSTOP of a worker or of the leader, a Redis restart, a partition, S3 error
# bursts, source objects overwritten mid-copy. Then a clean iteration, and the checks:
# destination equal to source, no open uploads, exact counts, no dead letters.
#   scripts/chaos.sh [--runs N] [--seed S] [--objects N] [--store garage|rgw]
#                                                   (default 10 runs on Garage)
set -euo pipefail
. "$(dirname "$0")/help.sh"
help_if_asked "$0" -- "$@"
cd "$(dirname "$0")/.."
scripts/deps.sh --garage --ceph
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet -p ferry -p ferry-testkit --bin ferry --bin ferry-chaos
exec target/release/ferry-chaos --ferry target/release/ferry "$@"
