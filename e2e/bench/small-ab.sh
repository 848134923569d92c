#!/usr/bin/env bash
# A/B of two sublet builds on 4 KiB objects in one run (issue 26): two `sublet dev` side by
# side (default plan: 4 KiB objects kept in metadata), small-put then small-get rounds
# alternating between them, the order swapped every round, so a noisy neighbour hurts both
# alike. Per round and build: ops/s, p50 ms, CPU ms per 1000 operations (utime + stime of the
# process: gateway and six providers). Then, per build, syscalls and fsyncs per PUT
# (`strace -c -f` over STRACE_OBJECTS small PUTs).
#
# Usage: OLD=/path/to/old/sublet NEW=/path/to/new/sublet e2e/bench/small-ab.sh
#        (OBJECTS=2000 STREAMS=8 ROUNDS=5 STRACE_OBJECTS=500; BENCH: a sublet-bench binary)
# Environment: BENCH_TMP (where the data goes; default /var/tmp), BENCH_OUT (default
#              ./bench-small-ab), KEEP=1.
set -euo pipefail

OBJECTS=${OBJECTS:-2000}
STREAMS=${STREAMS:-8}
ROUNDS=${ROUNDS:-5}
STRACE_OBJECTS=${STRACE_OBJECTS:-500}
: "${OLD:?OLD=path of the old sublet binary}" "${NEW:?NEW=path of the new sublet binary}"
BENCH=${BENCH:-$(dirname "$NEW")/sublet-bench}
BENCH_OUT=$(mkdir -p "${BENCH_OUT:-./bench-small-ab}" && cd "${BENCH_OUT:-./bench-small-ab}" && pwd)
log() { echo "small-ab: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-small-ab.XXXXXX")
BUILDS=(old new)
declare -A BIN=([old]=$OLD [new]=$NEW) PID PORT AK SK
cleanup() {
    for b in "${BUILDS[@]}"; do
        [[ -n ${PID[$b]:-} ]] && kill -INT "${PID[$b]}" 2>/dev/null || true
    done
    for b in "${BUILDS[@]}"; do
        [[ -n ${PID[$b]:-} ]] && wait "${PID[$b]}" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for b in "${BUILDS[@]}"; do
    PORT[$b]=$(free_port)
    "${BIN[$b]}" dev --dir "$WORK/$b" --listen "127.0.0.1:${PORT[$b]}" \
        --admin-listen "127.0.0.1:$(free_port)" >"$WORK/$b.out" 2>"$WORK/$b.log" </dev/null &
    PID[$b]=$!
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$b]}") 2>/dev/null && break
        kill -0 "${PID[$b]}" 2>/dev/null || { log "$b exited:"; tail "$WORK/$b.log" >&2; exit 1; }
        sleep 0.1
    done
    AK[$b]=$(sed -n 's/^access_key=//p' "$WORK/$b/credentials")
    SK[$b]=$(sed -n 's/^secret_key=//p' "$WORK/$b/credentials")
done

TICK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
bench() { # build prefix phase [objects]
    "$BENCH" --endpoint "http://127.0.0.1:${PORT[$1]}" --access-key "${AK[$1]}" \
        --secret-key "${SK[$1]}" --bucket bench --prefix "$2/" --phases "$3" \
        --small-objects "${4:-$OBJECTS}" -c "$STREAMS" -q --json "$BENCH_OUT/$2.$3.$1.json" \
        >/dev/null
}
field() { python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["phases"][0]; print(p[sys.argv[2]])' "$@"; }

# Warm-up: both servers create the bucket and fill their caches.
for b in "${BUILDS[@]}"; do bench "$b" warm small-put 200; done
echo "| round | build | PUT ops/s | PUT p50 ms | PUT CPU ms/1000 ops | GET ops/s | GET p50 ms | GET CPU ms/1000 ops |" >"$BENCH_OUT/rounds.md"
echo "|---|---|---|---|---|---|---|---|" >>"$BENCH_OUT/rounds.md"
for round in $(seq 1 "$ROUNDS"); do
    order=("${BUILDS[@]}")
    ((round % 2 == 0)) && order=(new old)
    for b in "${order[@]}"; do
        row="| $round | $b"
        for phase in small-put small-get; do
            before=$(cpu_of "${PID[$b]}")
            bench "$b" "r$round" "$phase"
            after=$(cpu_of "${PID[$b]}")
            json="$BENCH_OUT/r$round.$phase.$b.json"
            [[ $(field "$json" errors) == 0 ]] || { log "$phase on $b had errors"; exit 1; }
            cpu=$(python3 -c "print(round(($after - $before) * 1e6 / $OBJECTS))")
            row="$row | $(field "$json" ops_per_sec) | $(field "$json" p50_ms) | $cpu"
        done
        echo "$row |" | tee -a "$BENCH_OUT/rounds.md" >&2
    done
done

# Syscalls per PUT: strace attached to each server across STRACE_OBJECTS PUTs.
for b in "${BUILDS[@]}"; do
    strace -c -f -p "${PID[$b]}" -o "$BENCH_OUT/strace.$b.txt" &
    spid=$!
    sleep 1
    bench "$b" strace small-put "$STRACE_OBJECTS"
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    python3 - "$BENCH_OUT/strace.$b.txt" "$STRACE_OBJECTS" "$b" <<'PY' | tee -a "$BENCH_OUT/strace.md" >&2
import sys
calls, syncs, n = 0, 0, int(sys.argv[2])
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
        c = int(f[3]); calls += c
        if f[-1] in ("fsync", "fdatasync", "syncfs"): syncs += c
print(f"{sys.argv[3]}: {calls / n:.1f} syscalls and {syncs / n:.2f} fsyncs per PUT (strace -c -f, {n} PUTs)")
PY
done
