#!/usr/bin/env bash
# Time from `strata deploy` of a pre-built example (Procfile pack, an existing
# script, no dependency install) to the first 200 from the new release:
# median of 10 runs, through the real CLI and a real `strata up`.
#
#   deploy/bench/deploy-latency.sh            # 10 runs
#   RUNS=20 deploy/bench/deploy-latency.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-10}

cargo build --release --quiet -p strata-cli
bin=$PWD/target/release/strata
data=$(mktemp -d)
id=$$
"$bin" up --data-dir "$data" --listen 127.0.0.1:0 --compute-listen 127.0.0.1:0 \
    --traffic-listen 127.0.0.1:0 --ingress-listen 127.0.0.1:0 --observe-listen 127.0.0.1:0 \
    --stream "BENCH_$id" --subject-prefix "bench$id" >"$data/up.log" 2>&1 &
up=$!
cleanup() {
    kill -INT "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
    python3 - "$id" <<'PY' || true
import asyncio, sys
try:
    import nats
except ImportError:
    sys.exit(0)
async def main():
    nc = await nats.connect("nats://127.0.0.1:4222")
    await nc.jetstream().delete_stream(f"BENCH_{sys.argv[1]}")
    await nc.close()
asyncio.run(main())
PY
    rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 300); do [ -s "$data/endpoints.json" ] && break; sleep 0.1; done
STRATA_ENDPOINT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$data/endpoints.json")
STRATA_TOKEN=$(cat "$data/admin-token")
export STRATA_ENDPOINT STRATA_TOKEN
"$bin" apps create bench >/dev/null

ms=()
for i in $(seq 1 "$runs"); do
    start=$(date +%s%N)
    url=$("$bin" deploy examples/python-hello -a bench --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["urls"][0])')
    until curl -fsS "$url/" 2>/dev/null | grep -q "release v$i)"; do :; done
    end=$(date +%s%N)
    ms+=($(((end - start) / 1000000)))
    echo "run $i: ${ms[-1]} ms"
done
median=$(printf '%s\n' "${ms[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
bare_start=$(date +%s%N)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd examples/python-hello && PORT=$port exec python3 app.py >/dev/null 2>&1) &
bare=$!
until curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1; do :; done
bare_ms=$((($(date +%s%N) - bare_start) / 1000000))
kill "$bare"
echo "deploy to first 200: median ${median} ms over $runs runs (target < 500 ms); the bare process alone: ${bare_ms} ms"
