#!/usr/bin/env bash
# Runs ferry's main job.
#   scripts/quickstart.sh               a real replication on this machine, with no Redis:
#                                       starts two S3 endpoints (moto), seeds a source bucket,
#                                       copies it with `ferry sync` (the embedded queue, in a
#                                       state dir), changes one object and syncs again (only it
#                                       is copied), and checks the copy.
#   scripts/quickstart.sh --cluster     the same pair as a cluster: starts Redis too, and
#                                       replicates with a coordinator and two workers, then
#                                       runs again to show an empty iteration.
#   scripts/quickstart.sh ferry.toml    replicates what your config says (coordinator and workers
#                                       in one process; see README for multi-machine runs).
set -euo pipefail
. "$(dirname "$0")/help.sh"
help_if_asked "$0" -- "$@"
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cluster=0
if [ "${1:-}" = "--cluster" ]; then
  cluster=1
  shift
fi
if [ $# -ge 1 ] || [ "$cluster" = 1 ]; then
  scripts/deps.sh
else
  scripts/deps.sh --moto-only
fi
cargo build --release --quiet
ferry=target/release/ferry

if [ $# -ge 1 ]; then
  exec "$ferry" run --config "$1" --workers 2
fi

objects=${QUICKSTART_OBJECTS:-1000}
work=$(mktemp -d -t ferry-quickstart-XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "quickstart: nothing listens on port $1" >&2
  exit 1
}

east_port=$(port); west_port=$(port)
if [ "$cluster" = 1 ]; then
  redis_port=$(port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
fi
moto_server -H 127.0.0.1 -p "$east_port" >"$work/east.log" 2>&1 &
pids+=($!)
moto_server -H 127.0.0.1 -p "$west_port" >"$work/west.log" 2>&1 &
pids+=($!)
wait_port "$east_port"; wait_port "$west_port"
if [ "$cluster" = 1 ]; then wait_port "$redis_port"; fi

echo "quickstart: seeding $objects objects into s3://photos on endpoint east (port $east_port)"
python3 - "$east_port" "$west_port" "$objects" <<'PY'
import sys, concurrent.futures, boto3
east, west, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def client(port):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="demo", aws_secret_access_key="demo")
src, dst = client(east), client(west)
src.create_bucket(Bucket="photos")
dst.create_bucket(Bucket="photos-dr")
def put(i):
    src.put_object(Bucket="photos", Key=f"{2024 + i % 2}/album-{i % 17}/photo-{i:05}.jpg",
                   Body=(f"photo {i} " * (i % 300)).encode(), ContentType="image/jpeg",
                   CacheControl="max-age=86400", Metadata={"camera": f"cam-{i % 5}"})
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(put, range(n)))
PY

cat >"$work/ferry.toml" <<TOML
[endpoints.east]
url = "http://127.0.0.1:$east_port"
region = "us-east-1"
path_style = true
access_key_id = "demo"
secret_access_key = "demo"

[endpoints.west]
url = "http://127.0.0.1:$west_port"
region = "us-east-1"
path_style = true
access_key_id = "demo"
secret_access_key = "demo"

TOML

if [ "$cluster" = 0 ]; then
  echo "quickstart: ferry sync east:photos west:photos-dr (no Redis: the queue and ledger live in $work/state)"
  "$ferry" sync east:photos west:photos-dr --config "$work/ferry.toml" --state-dir "$work/state"
  python3 - "$east_port" <<'PY'
import sys, boto3
c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                 aws_access_key_id="demo", aws_secret_access_key="demo")
c.put_object(Bucket="photos", Key="2024/album-0/photo-00000.jpg", Body=b"retouched",
             ContentType="image/jpeg")
PY
  echo "quickstart: one photo changed; the second sync copies only it"
  "$ferry" sync east:photos west:photos-dr --config "$work/ferry.toml" --state-dir "$work/state"
else
  cat >>"$work/ferry.toml" <<TOML
[redis]
url = "redis://127.0.0.1:$redis_port"
namespace = "quickstart"

[[rules]]
name = "photos-dr"
source = { endpoint = "east", bucket = "photos", prefixes = ["2024/", "2025/"] }
destination = { endpoint = "west", bucket = "photos-dr" }
stop = "once"
TOML
  "$ferry" validate --config "$work/ferry.toml"
  echo "quickstart: iteration 1 (full copy), 1 coordinator + 2 workers"
  "$ferry" run --config "$work/ferry.toml" --workers 2 2>&1 | grep -E "iteration finished|ERROR|WARN" || true
  echo "quickstart: iteration 2 (nothing changed: listings only, nothing copied)"
  "$ferry" run --config "$work/ferry.toml" --workers 2 2>&1 | grep -E "iteration finished|ERROR|WARN" || true
fi

python3 - "$east_port" "$west_port" <<'PY'
import sys, boto3
def client(port):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="demo", aws_secret_access_key="demo")
def listing(c, bucket):
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["Size"])
    return out
src, dst = listing(client(sys.argv[1]), "photos"), listing(client(sys.argv[2]), "photos-dr")
if src != dst:
    print(f"quickstart: MISMATCH: source {len(src)} objects, destination {len(dst)}")
    sys.exit(1)
print(f"quickstart: OK: s3://photos-dr on endpoint west holds all {len(dst)} objects with identical ETags")
PY
