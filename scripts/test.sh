#!/usr/bin/env bash
# The test command: installs what the tests need (see scripts/deps.sh), then runs every test
# against real servers (redis-server, moto, Garage, Ceph RGW) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --garage --ceph
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo nextest run --workspace --no-fail-fast "$@"
