#!/usr/bin/env bash
# The console in a real browser: starts a platform (`strata up` on free ports,
# scratch data directory, its own stream and database prefix), deploys
# examples/python-hello with the CLI, then drives Debian's headless chromium
# through the console (deploy/test/console_chromium.py): sign in with the
# admin token, see the app, open it, see its releases, instances, routes and
# checks, and save a screenshot to target/console.png.
#
# Usage: deploy/test/console-chromium.sh
#        EXPECT_ROUTES_AND_CHECKS=1 to fail unless routes and checks are shown
#        (they are when traffic and observe run behind the gateway).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if ! command -v chromium >/dev/null; then
    echo "==> installing Debian's chromium" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --quiet -p strata-cli
WORK="$(mktemp -d)"
ID="$(date +%s)$RANDOM"
STREAM="CONSOLE_$ID"
target/debug/strata up --data-dir "$WORK/data" --listen 127.0.0.1:0 --compute-listen 127.0.0.1:0 \
    --data-listen 127.0.0.1:0 --traffic-listen 127.0.0.1:0 \
        --ingress-listen 127.0.0.1:0 --observe-listen 127.0.0.1:0 --stream "$STREAM" --subject-prefix "console$ID" --db-prefix "console${ID}_" \
    >"$WORK/up.log" 2>&1 &
UP_PID=$!
cleanup() {
    kill -INT "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    python3 - "${NATS_URL:-nats://127.0.0.1:4222}" "$STREAM" <<'PY' || true
import socket, sys
host, port = sys.argv[1].split("//")[-1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.recv(4096)
s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.c 1\r\nPUB $JS.API.STREAM.DELETE.' + sys.argv[2].encode() + b' _INBOX.c 0\r\n\r\nPING\r\n')
s.recv(4096)
PY
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
    [[ -s $WORK/data/endpoints.json ]] && break
    kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/up.log"; exit 1; }
    sleep 0.1
done
BASE="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"])' "$WORK/data/endpoints.json")"
TOKEN="$(cat "$WORK/data/admin-token")"
STRATA_ENDPOINT="$BASE" STRATA_TOKEN="$TOKEN" STRATA_CONFIG_DIR="$WORK/config" \
    target/debug/strata deploy examples/python-hello
mkdir -p target
python3 deploy/test/console_chromium.py "$BASE" "$TOKEN" python-hello target/console.png
