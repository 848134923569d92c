#!/usr/bin/env bash
# How full the shared ETag MD5 lanes run under a PUT load: a fresh `sublet dev`, one PUT
# phase of sublet-bench, and `sublet_gateway_etag_md5_lanes_total{count=calls|lanes|bytes}`
# read from the admin endpoint before and after (mean fill = lanes / calls, bytes per call).
# With PROFILE=1 the phase runs under `perf record -g` and the top self-time symbols are
# printed (the gateway and its six providers share the process in `sublet dev`).
#
# Usage: SUBLET=... BENCH=... e2e/bench/lane-fill.sh   (SIZE=4Mi OBJECTS=64 STREAMS=8)
# Environment: BENCH_TMP (default /var/tmp, a real disk), SIZE, OBJECTS, STREAMS, PROFILE=1,
#              PERF_OUT (where perf.data goes; default inside the data directory, removed),
#              PERF_CALLGRAPH (perf's --call-graph: fp by default, dwarf to see callers in release),
#              KEEP=1.
set -euo pipefail

SUBLET=${SUBLET:?"lane-fill: SUBLET=<a release sublet binary>"}
BENCH=${BENCH:?"lane-fill: BENCH=<a release sublet-bench binary>"}
SIZE=${SIZE:-4Mi}
OBJECTS=${OBJECTS:-64}
STREAMS=${STREAMS:-8}
log() { echo "lane-fill: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-lanes.XXXXXX")
DEV=
cleanup() {
    if [[ -n $DEV ]]; then
        kill -INT "$DEV" 2>/dev/null || true
        wait "$DEV" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# shellcheck source=dev-cluster.sh
source "$(dirname "$0")/dev-cluster.sh"
start_dev
bench() {
    "$BENCH" --endpoint "http://127.0.0.1:$PORT" --access-key "$AK" \
        --secret-key "$SK" --bucket lanes -q "$@"
}
lanes() {
    curl -s "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^sublet_gateway_etag_md5_lanes_total/ {
            match($0, /count="[a-z]+"/); k = substr($0, RSTART + 7, RLENGTH - 8); v[k] = $NF }
            END { printf "%d %d %d\n", v["calls"], v["lanes"], v["bytes"] }'
}
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f\n", ($14 + $15) / t}' "/proc/$DEV/stat"; }

bench --prefix warm/ --phases put -n 8 -s "$SIZE" -c "$STREAMS" >/dev/null
read -r c0 l0 b0 < <(lanes)
before=$(cpu)
PR=
if [[ ${PROFILE:-0} == 1 ]]; then
    PERF_DATA=${PERF_OUT:-$WORK/put.perf}
    perf record -F 499 --call-graph "${PERF_CALLGRAPH:-fp}" -o "$PERF_DATA" -p "$DEV" 2>"$WORK/perf-err" &
    PR=$!
    sleep 1
fi
bench --prefix run/ --phases put -n "$OBJECTS" -s "$SIZE" -c "$STREAMS" --json "$WORK/put.json" >/dev/null
if [[ -n $PR ]]; then kill -INT "$PR"; wait "$PR" 2>/dev/null || true; fi
after=$(cpu)
read -r c1 l1 b1 < <(lanes)
python3 - "$WORK/put.json" "$before" "$after" "$((c1 - c0))" "$((l1 - l0))" "$((b1 - b0))" <<'EOF'
import json, sys
path, before, after, calls, lanes, hashed = sys.argv[1:]
p = json.load(open(path))["phases"][0]
calls, lanes, hashed = int(calls), int(lanes), int(hashed)
gb = p["bytes"] / 1e9
print(f"put: {p['mb_per_sec']:.1f} MB/s, p50 {p.get('p50_ms')} ms, "
      f"{(float(after) - float(before)) / gb:.2f} CPU s/GB (gateway + providers), errors {p['errors']}")
if calls:
    print(f"lanes: {calls} kernel calls, mean fill {lanes / calls:.2f} lanes, "
          f"{hashed / calls / 1024:.1f} KiB a call, {hashed / 1e6:.1f} MB hashed in lanes "
          f"of {p['bytes'] / 1e6:.1f} MB uploaded")
EOF
if [[ -n $PR ]]; then
    echo "where the server's CPU went (perf, self time)"
    perf report -i "$PERF_DATA" --no-children --percent-limit 0.5 --sort symbol \
        --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//' | head -45
fi
echo "peak RSS (VmHWM) of sublet dev: $(awk '/VmHWM/ {print $2}' "/proc/$DEV/status") KiB"
