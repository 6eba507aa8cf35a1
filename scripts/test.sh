#!/usr/bin/env bash
# The test command: installs what the tests need (see scripts/deps.sh), then runs every test
# against real servers (redis-server, moto, Garage, Ceph RGW) with cargo-nextest; rclone 1.75
# for the tests that check what it copied.
#   scripts/test.sh                    every test
#   scripts/test.sh --test security    other arguments go to `cargo nextest run`
set -euo pipefail
. "$(dirname "$0")/help.sh"
help_if_asked "$0" -- "$@"
cd "$(dirname "$0")/.."
scripts/deps.sh --garage --ceph --rclone
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo nextest run --workspace --no-fail-fast "$@"
