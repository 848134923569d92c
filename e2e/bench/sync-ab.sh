#!/usr/bin/env bash
# A/B of the providers' sync modes in one run: two `sublet dev` (EC 4+2, encrypted) side by
# side, one whose providers fsync each shard file (`file`), one whose providers share a
# syncfs(2) among the writes finishing together (`batch`), PUT rounds alternating between
# them so a noisy neighbour hurts both alike. Per round: MB/s, CPU seconds per GB stored
# (utime + stime of the process: gateway and six providers). Then the flushes per object of
# each (strace -c -e fsync,fdatasync,syncfs over STRACE_OBJECTS objects).
#
# Usage: e2e/bench/sync-ab.sh   (SIZE=4Mi OBJECTS=64 STREAMS=8 ROUNDS=3 STRACE_OBJECTS=16)
# Environment: BENCH_TMP (where the data goes: the disk under test; default /var/tmp),
#              NO_BUILD=1 with SUBLET and BENCH, CARGO_TARGET_DIR, KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SIZE=${SIZE:-4Mi}
OBJECTS=${OBJECTS:-64}
STREAMS=${STREAMS:-8}
ROUNDS=${ROUNDS:-3}
STRACE_OBJECTS=${STRACE_OBJECTS:-16}
if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
        cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
fi
SUBLET=${SUBLET:-$TARGET/release/sublet}
BENCH=${BENCH:-$TARGET/release/sublet-bench}
log() { echo "sync-ab: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-sync-ab.XXXXXX")
MODES=(file batch)
declare -A PID PORT AK SK
cleanup() {
    for m in "${MODES[@]}"; do
        [[ -n ${PID[$m]:-} ]] && kill -INT "${PID[$m]}" 2>/dev/null || true
    done
    for m in "${MODES[@]}"; do
        [[ -n ${PID[$m]:-} ]] && wait "${PID[$m]}" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for m in "${MODES[@]}"; do
    PORT[$m]=$(free_port)
    SUBLET_PROVIDER_SYNC_MODE=$m "$SUBLET" dev --dir "$WORK/$m" --listen "127.0.0.1:${PORT[$m]}" \
        --admin-listen "127.0.0.1:$(free_port)" >"$WORK/$m.out" 2>"$WORK/$m.log" </dev/null &
    PID[$m]=$!
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$m]}") 2>/dev/null && break
        kill -0 "${PID[$m]}" || { tail "$WORK/$m.log" >&2; exit 1; }
        sleep 0.1
    done
    AK[$m]=$(sed -n 's/^access_key=//p' "$WORK/$m/credentials")
    SK[$m]=$(sed -n 's/^secret_key=//p' "$WORK/$m/credentials")
done
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f\n", ($14 + $15) / t}' "/proc/$1/stat"; }
bench() {
    local m=$1
    shift
    "$BENCH" --endpoint "http://127.0.0.1:${PORT[$m]}" --access-key "${AK[$m]}" \
        --secret-key "${SK[$m]}" --bucket syncab -q "$@"
}
for m in "${MODES[@]}"; do
    bench "$m" --prefix warm/ --phases put -n 8 -s "$SIZE" -c "$STREAMS" >/dev/null
done

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); $SIZE objects, $STREAMS streams, $OBJECTS per round; data on $(df -T "$WORK" | awk 'NR == 2 {print $2 " " $1}')"
echo
echo "| round | mode | MB/s | p50 ms | p99 ms | CPU s per GB stored |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    for k in 0 1; do
        m=${MODES[$(((r + k) % 2))]}
        before=$(cpu "${PID[$m]}")
        bench "$m" --prefix "r$r/" --phases put -n "$OBJECTS" -s "$SIZE" -c "$STREAMS" \
            --json "$WORK/$m-$r.json" >/dev/null
        after=$(cpu "${PID[$m]}")
        python3 - "$r" "$m" "$before" "$after" "$WORK/$m-$r.json" <<'PY'
import json, sys
r, m, before, after, path = sys.argv[1:]
p = json.load(open(path))["phases"][0]
cpu = (float(after) - float(before)) / (p["bytes"] / 1e9)
err = f" ({p['errors']} errors)" if p["errors"] else ""
print(f"| {r} | {m} | {p['mb_per_sec']:.1f}{err} | {p['p50_ms']:.0f} | {p['p99_ms']:.0f} | {cpu:.2f} |")
PY
    done
done
echo
echo "| mode | fsync per object | fdatasync per object | syncfs per object |"
echo "|---|---|---|---|"
for m in "${MODES[@]}"; do
    strace -f -c -e trace=fsync,fdatasync,syncfs -o "$WORK/$m.strace" -p "${PID[$m]}" 2>/dev/null &
    ST=$!
    sleep 1
    bench "$m" --prefix sc/ --phases put -n "$STRACE_OBJECTS" -s "$SIZE" -c "$STREAMS" >/dev/null
    sleep 0.5
    kill -INT "$ST"
    wait "$ST" 2>/dev/null || true
    awk -v n="$STRACE_OBJECTS" -v m="$m" '$4 ~ /^[0-9]+$/ { c[$NF] = $4 }
        END { printf "| %s | %.1f | %.1f | %.1f |\n", m, c["fsync"] / n, c["fdatasync"] / n, c["syncfs"] / n }' \
        "$WORK/$m.strace"
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
