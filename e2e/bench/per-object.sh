#!/usr/bin/env bash
# What one photo-sized object costs `sublet dev` (EC 4+2, AES-256-GCM, fsync), in measures a
# busy machine does not distort much:
#   1. CPU seconds per GB stored and per GB read (utime + stime of the `sublet dev` process,
#      which holds the gateway and its six providers, from /proc/PID/stat around each phase);
#   2. the syscalls per object of a PUT and a GET phase (strace -c over STRACE_OBJECTS objects
#      on STREAMS streams: fsyncs, renames, opens, writes, reads);
#   3. with TIMELINE=1, a timeline of one PUT and one GET (strace -f -tt -T), summarised per
#      step: when the body arrived, the shard files were written and fsynced, the directory
#      fsynced, the metadata committed and the answer sent;
#   4. with PROFILE=1, the functions the server spent its CPU in during a PUT and a GET
#      phase (perf record -g, self time).
#
# Usage: e2e/bench/per-object.sh        (SIZE=4Mi OBJECTS=64 STREAMS=8 by default)
# Environment: BENCH_TMP (default /var/tmp; a real disk), SIZE, OBJECTS, STREAMS, STRACE_OBJECTS,
#              TIMELINE=1, PROFILE=1, KEEP=1, CARGO_TARGET_DIR (release binaries are built there),
#              SUBLET and BENCH (binaries to use instead) with NO_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SIZE=${SIZE:-4Mi}
OBJECTS=${OBJECTS:-64}
STREAMS=${STREAMS:-8}
STRACE_OBJECTS=${STRACE_OBJECTS:-16}
SUBLET=${SUBLET:-$TARGET/release/sublet}
BENCH=${BENCH:-$TARGET/release/sublet-bench}
if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
        cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
fi
log() { echo "per-object: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-per-object.XXXXXX")
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
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{printf "%.3f\n", ($14 + $15) / t}' "/proc/$DEV/stat"; }
bench() {
    "$BENCH" --endpoint "http://127.0.0.1:$PORT" --access-key "$AK" \
        --secret-key "$SK" --bucket perobj -q "$@"
}

# Warm up: connections to the providers, the bucket, the allocator's arenas.
bench --prefix warm/ --phases put,get -n 8 -s "$SIZE" -c "$STREAMS" >/dev/null

# 1. CPU per GB.
for phase in put get; do
    before=$(cpu)
    start=$(date +%s.%N)
    bench --prefix run/ --phases "$phase" -n "$OBJECTS" -s "$SIZE" -c "$STREAMS" \
        --json "$WORK/$phase.json" >/dev/null
    end=$(date +%s.%N)
    after=$(cpu)
    python3 - "$phase" "$before" "$after" "$start" "$end" "$WORK/$phase.json" <<'EOF'
import json, sys
phase, before, after, start, end, path = sys.argv[1:]
doc = json.load(open(path))
p = doc["phases"][0]
gb = p["bytes"] / 1e9
cpu = float(after) - float(before)
wall = float(end) - float(start)
rate = p["mb_per_sec"]
print(f"{phase}: {rate:.1f} MB/s, {cpu:.2f} CPU s for {gb:.3f} GB -> "
      f"{cpu / gb:.2f} CPU s per GB (server process: gateway + 6 providers), "
      f"{cpu / wall:.2f} cores busy, p50 {p.get('p50_ms')} ms, p99 {p.get('p99_ms')} ms, "
      f"errors {p['errors']}")
EOF
done

# 2. Syscalls per object: strace -c around STRACE_OBJECTS objects on STREAMS streams (what
#    concurrent writes share, such as the directory fsync, shows only with several at once),
#    divided by the objects. The bucket exists already (warm-up), so nothing else runs.
for phase in put get; do
    strace -f -c -o "$WORK/$phase.strace-c" -p "$DEV" 2>"$WORK/$phase.strace-err" &
    ST=$!
    sleep 1
    bench --prefix sc/ --phases "$phase" -n "$STRACE_OBJECTS" -s "$SIZE" -c "$STREAMS" >/dev/null
    sleep 0.5
    kill -INT "$ST"
    wait "$ST" 2>/dev/null || true
    echo "$phase of $SIZE: syscalls per object over $STRACE_OBJECTS objects (strace -c, gateway + providers)"
    awk -v n="$STRACE_OBJECTS" '$NF != "total" && $0 !~ /^-/ && $4 ~ /^[0-9]+$/ &&
            $NF !~ /futex|epoll|sched_yield|madvise|restart_syscall/ {
            printf "  %-18s %8.1f\n", $NF, $4 / n
         }' "$WORK/$phase.strace-c" | sort -k2 -n -r | head -20
done

# 3. A timeline of one PUT and one GET.
if [[ ${TIMELINE:-0} == 1 ]]; then
    # The providers' ports: what the process listens on besides the S3 and admin ports.
    PROVIDERS=$(ss -ltnpH | awk -v pid="pid=$DEV," -v s3="$PORT" -v admin="$ADMIN" '
        index($0, pid) { n = split($4, a, ":"); p = a[n]; if (p != s3 && p != admin) print p }' |
        paste -sd, -)
    for phase in put get; do
        strace -f -tt -T -yy -e trace=openat,pwrite64,write,writev,fsync,fdatasync,rename,renameat2,recvfrom,read,sendto,sendmsg \
            -o "$WORK/$phase.trace" -p "$DEV" &
        ST=$!
        sleep 1
        bench --prefix tl/ --phases "$phase" -n 1 -s "$SIZE" -c 1 >/dev/null
        sleep 0.5
        kill -INT "$ST"
        wait "$ST" 2>/dev/null || true
        python3 "$ROOT/e2e/bench/timeline.py" "$WORK/$phase.trace" "$phase" "$PORT" "$PROVIDERS"
    done
fi
# 4. With PROFILE=1, where the CPU goes during a PUT and a GET phase (perf record, sampled).
if [[ ${PROFILE:-0} == 1 ]]; then
    for phase in put get; do
        perf record -F 499 -g -o "$WORK/$phase.perf" -p "$DEV" 2>"$WORK/$phase.perf-err" &
        PR=$!
        sleep 1
        bench --prefix pf/ --phases "$phase" -n "$OBJECTS" -s "$SIZE" -c "$STREAMS" >/dev/null
        kill -INT "$PR"
        wait "$PR" 2>/dev/null || true
        echo "$phase of $SIZE: where the server's CPU went (perf, self time, top 25)"
        perf report -i "$WORK/$phase.perf" --no-children --percent-limit 0.7 --sort symbol \
            --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//' | head -25
    done
fi
echo "peak RSS (VmHWM) of sublet dev: $(awk '/VmHWM/ {print $2}' "/proc/$DEV/status") KiB"
