#!/usr/bin/env bash
# Strata's ingress against nginx and HAProxy, in one run on this machine.
#
# Starts a fixed-response backend and each proxy in front of it (same number
# of workers each), then drives each in turn with
# `wrk -t2 -c64 -d10s --latency`, for ROUNDS rounds in rotating order (the
# machine's speed drifts by ±20% within minutes, so one pass in a fixed
# order favours whoever runs in the fast minute). Prints, for the backend
# alone and each proxy and round: requests/s, p50, p99 and requests per
# CPU-second of the proxy process; then the median of each over the rounds
# and the Strata/nginx and Strata/HAProxy ratios of those medians.
#
# Every proxy does the same work per request: route by Host, keep upstream
# connections alive, and add what Strata's ingress adds (X-Forwarded-For,
# -Proto and -Host, Via, and an X-Request-Id, made when the client sent
# none, on the request and the answer).
#
# Usage: deploy/bench/proxy.sh   (WORKERS=1 ROUNDS=3 DURATION=10s CONNECTIONS=64 to change)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WORKERS="${WORKERS:-1}"
ROUNDS="${ROUNDS:-3}"
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
# Milliseconds from wrk's latency figures (850.00us, 1.20ms, 1.01s).
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.2f", n }'; }
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
    p50="$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")"
    p99="$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')"
    total="$(awk '/requests in/ {print $1}' <<<"$out")"
    cpu="$(awk -v t=$(( after - before )) -v c="$CLK" 'BEGIN {printf "%.2f", t / c}')"
    if [[ ${#pids[@]} -gt 0 && $cpu != 0.00 ]]; then
        per_cpu="$(awk -v n="$total" -v c="$cpu" 'BEGIN {printf "%.0f", n / c}')"
    else
        per_cpu="-"
    fi
    RESULTS+=("$name|$rps|$p50|$p99|$cpu|$per_cpu|$errors|$ROUND")
}

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
    map \$http_x_request_id \$bench_request_id { "" \$request_id; default \$http_x_request_id; }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        server_name bench.test;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header Via "1.1 nginx";
            proxy_set_header X-Request-Id \$bench_request_id;
            add_header X-Request-Id \$bench_request_id always;
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
wait_port "$NGINX_PORT"
NGINX_WORKERS=($(pgrep -P "$NGINX_MASTER"))

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
    unique-id-format %[uuid]
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
    http-request set-var(txn.request_id) req.hdr(x-request-id)
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via "1.1 haproxy"
    http-response set-header X-Request-Id %[var(txn.request_id)]
    use_backend app if { hdr(host) -i bench.test }
backend app
    server s1 127.0.0.1:$BACKEND_PORT
CONF
haproxy -f "$WORK/haproxy.cfg" -db &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_port "$HAPROXY_PORT"

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

# Every proxy is up (idle ones cost nothing); now the rounds.
TARGETS=(backend nginx haproxy strata)
for ROUND in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2 3; do
        target="${TARGETS[$(( (i + ROUND - 1) % 4 ))]}"
        echo "==> round $ROUND: $target" >&2
        case "$target" in
            backend) run backend "$BACKEND_PORT" bench.test ;;
            nginx) run nginx "$NGINX_PORT" bench.test "${NGINX_WORKERS[@]}" ;;
            haproxy) run haproxy "$HAPROXY_PORT" bench.test "$HAPROXY_PID" ;;
            strata) run strata "$STRATA_PORT" bench.test "$STRATA_PID" ;;
        esac
    done
done
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt"
grep -q 'strata_traffic_requests_total{.*code="2xx"}' "$WORK/metrics.txt" \
    || { echo "Strata's metrics endpoint did not show the route's requests" >&2; exit 1; }

printf '\n%-8s %5s %12s %10s %10s %9s %14s  %s\n' "target" "round" "requests/s" "p50 ms" "p99 ms" "cpu-s" "req/cpu-s" "errors"
for row in "${RESULTS[@]}"; do
    IFS='|' read -r name rps p50 p99 cpu per_cpu errors round <<<"$row"
    printf '%-8s %5s %12s %10s %10s %9s %14s  %s\n' "$name" "$round" "$rps" "$p50" "$p99" "$cpu" "$per_cpu" "$errors"
done
# median TARGET FIELD: the median of one figure over the rounds.
median() {
    for row in "${RESULTS[@]}"; do IFS='|' read -r -a f <<<"$row"; [[ ${f[0]} == "$1" ]] && echo "${f[$2]}"; done \
        | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
echo "medians over $ROUNDS rounds (workers per proxy: $WORKERS; wrk -t2 -c$CONNECTIONS -d$DURATION --latency):"
printf '%-8s %12s %10s %10s %14s\n' "target" "requests/s" "p50 ms" "p99 ms" "req/cpu-s"
for target in "${TARGETS[@]}"; do
    printf '%-8s %12s %10s %10s %14s\n' "$target" "$(median "$target" 1)" "$(median "$target" 2)" "$(median "$target" 3)" "$(median "$target" 5)"
done
echo
for other in nginx haproxy; do
    printf 'Strata/%-8s requests/s %s  requests per CPU-second %s  p99 %s\n' "$other:" \
        "$(ratio "$(median strata 1)" "$(median "$other" 1)")" \
        "$(ratio "$(median strata 5)" "$(median "$other" 5)")" \
        "$(ratio "$(median strata 3)" "$(median "$other" 3)")"
done
