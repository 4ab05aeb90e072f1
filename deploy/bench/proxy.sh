#!/usr/bin/env bash
# Strata's ingress against nginx and HAProxy, in one run on this machine.
#
# Starts a fixed-response backend, then puts each proxy in front of it in
# turn (same number of workers each) and drives it with
# `wrk -t2 -c64 -d10s --latency`. Prints, for the backend alone and each
# proxy: requests/s, p50, p99 and requests per CPU-second of the proxy
# process, then Strata/nginx and Strata/HAProxy ratios. Only same-run ratios
# mean anything: run-to-run noise on a shared 2-core machine is ±20%.
#
# Usage: deploy/bench/proxy.sh            (WORKERS=1 DURATION=10s CONNECTIONS=64 to change)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WORKERS="${WORKERS:-1}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
    echo "==> installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> building the ingress and the backend (release)" >&2
cargo build --release -q -p strata-traffic --example bench_ingress --example fixed_backend
BIN="$ROOT/target/release/examples"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
# CPU seconds (user+sys) used so far by a process and its threads/children.
cpu_of() { awk '{print ($14+$15+$16+$17)}' "/proc/$1/stat"; }
CLK="$(getconf CLK_TCK)"

BACKEND_PORT="$(free_port)"
"$BIN/fixed_backend" "127.0.0.1:$BACKEND_PORT" 1 >/dev/null &
PIDS+=($!)
wait_port "$BACKEND_PORT"

RESULTS=()
# run NAME PORT HOST PIDS...: drive the proxy and record its figures.
run() {
    local name="$1" port="$2" host="$3"; shift 3
    local pids=("$@") before=0 after=0 pid
    # Warm up connections and caches.
    wrk -t2 -c"$CONNECTIONS" -d2s -H "Host: $host" "http://127.0.0.1:$port/" >/dev/null
    for pid in "${pids[@]}"; do before=$(( before + $(cpu_of "$pid") )); done
    local out
    out="$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $host" "http://127.0.0.1:$port/")"
    for pid in "${pids[@]}"; do after=$(( after + $(cpu_of "$pid") )); done
    local rps p50 p99 errors cpu per_cpu
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
    p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
    errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')"
    total="$(awk '/requests in/ {print $1}' <<<"$out")"
    cpu="$(awk -v t=$(( after - before )) -v c="$CLK" 'BEGIN {printf "%.2f", t / c}')"
    if [[ ${#pids[@]} -gt 0 && $cpu != 0.00 ]]; then
        per_cpu="$(awk -v n="$total" -v c="$cpu" 'BEGIN {printf "%.0f", n / c}')"
    else
        per_cpu="-"
    fi
    RESULTS+=("$name|$rps|$p50|$p99|$cpu|$per_cpu|$errors")
}

# The backend alone.
run backend "$BACKEND_PORT" bench.test

# nginx, upstream keep-alive on.
NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        server_name bench.test;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
wait_port "$NGINX_PORT"
NGINX_WORKERS=($(pgrep -P "$NGINX_MASTER"))
run nginx "$NGINX_PORT" bench.test "${NGINX_WORKERS[@]}"
kill "$NGINX_MASTER"; wait "$NGINX_MASTER" 2>/dev/null || true

# HAProxy, routing by Host as well.
HAPROXY_PORT="$(free_port)"
cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread $WORKERS
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    use_backend app if { hdr(host) -i bench.test }
backend app
    server s1 127.0.0.1:$BACKEND_PORT
CONF
haproxy -f "$WORK/haproxy.cfg" -db &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_port "$HAPROXY_PORT"
run haproxy "$HAPROXY_PORT" bench.test "$HAPROXY_PID"
kill "$HAPROXY_PID"; wait "$HAPROXY_PID" 2>/dev/null || true

# Strata's ingress, routing by Host, with its metrics on: the traffic
# service itself, its route made through the API and its endpoint announced
# on NATS as compute would (NATS_URL, default nats://127.0.0.1:4222).
STRATA_PORT="$(free_port)"
METRICS_PORT="$(free_port)"
"$BIN/bench_ingress" "127.0.0.1:$STRATA_PORT" "$WORKERS" "127.0.0.1:$METRICS_PORT" bench.test \
    "127.0.0.1:$BACKEND_PORT" >"$WORK/strata.log" 2>&1 &
STRATA_PID=$!
PIDS+=("$STRATA_PID")
for _ in $(seq 1 400); do grep -q '^ready' "$WORK/strata.log" && break; sleep 0.05; done
grep -q '^ready' "$WORK/strata.log" || { echo "Strata's ingress did not start:" >&2; cat "$WORK/strata.log" >&2; exit 1; }
run strata "$STRATA_PORT" bench.test "$STRATA_PID"
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt"
grep -q 'strata_traffic_requests_total{.*code="2xx"}' "$WORK/metrics.txt" \
    || { echo "Strata's metrics endpoint did not show the route's requests" >&2; exit 1; }

printf '\n%-8s %12s %10s %10s %9s %14s  %s\n' "target" "requests/s" "p50" "p99" "cpu-s" "req/cpu-s" "errors"
for row in "${RESULTS[@]}"; do
    IFS='|' read -r name rps p50 p99 cpu per_cpu errors <<<"$row"
    printf '%-8s %12s %10s %10s %9s %14s  %s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$per_cpu" "$errors"
done
field() { for row in "${RESULTS[@]}"; do IFS='|' read -r -a f <<<"$row"; [[ ${f[0]} == "$1" ]] && echo "${f[$2]}"; done; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "workers per proxy: $WORKERS; wrk -t2 -c$CONNECTIONS -d$DURATION"
echo "Strata/nginx:   requests/s $(ratio "$(field strata 1)" "$(field nginx 1)")  requests per CPU-second $(ratio "$(field strata 5)" "$(field nginx 5)")"
echo "Strata/HAProxy: requests/s $(ratio "$(field strata 1)" "$(field haproxy 1)")  requests per CPU-second $(ratio "$(field strata 5)" "$(field haproxy 5)")"
