#!/usr/bin/env bash
# A/B of two sublet binaries in one run (issue 26: the ETag's MD5 in shared SIMD lanes):
# two `sublet dev` (EC 4+2, encrypted, fsync) side by side, one from OLD, one from NEW, the
# rounds alternating between them so a noisy neighbour hurts both alike. Each round runs
# 4 MiB PUTs (OBJECTS objects, STREAMS streams) and the 1 GiB multipart upload (16 MiB parts,
# 4 in flight; its ranged read-back is not counted). Per round and binary: MB/s, p50 latency
# and CPU seconds per GB stored (utime + stime of the process: gateway and six providers;
# for the multipart upload read from a 0.1 s sampler at the end of the upload phase).
#
# Usage: OLD=/work/bin-base/sublet NEW=target-rel/release/sublet BENCH=.../sublet-bench \
#        e2e/bench/md5-ab.sh        (SIZE=4Mi OBJECTS=64 STREAMS=8 ROUNDS=3 MP=1Gi)
# Environment: BENCH_TMP (where the data goes; default /var/tmp), KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SIZE=${SIZE:-4Mi}
OBJECTS=${OBJECTS:-64}
STREAMS=${STREAMS:-8}
ROUNDS=${ROUNDS:-3}
MP=${MP:-1Gi}
OLD=${OLD:?OLD names the sublet binary before the change}
NEW=${NEW:-$TARGET/release/sublet}
BENCH=${BENCH:-$TARGET/release/sublet-bench}
log() { echo "md5-ab: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-md5-ab.XXXXXX")
SIDES=(old new)
declare -A BIN PID PORT AK SK
BIN[old]=$OLD
BIN[new]=$NEW
cleanup() {
    for m in "${SIDES[@]}"; do
        [[ -n ${PID[$m]:-} ]] && kill -INT "${PID[$m]}" 2>/dev/null || true
    done
    for m in "${SIDES[@]}"; do
        [[ -n ${PID[$m]:-} ]] && wait "${PID[$m]}" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for m in "${SIDES[@]}"; do
    PORT[$m]=$(free_port)
    "${BIN[$m]}" dev --dir "$WORK/$m" --listen "127.0.0.1:${PORT[$m]}" \
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
        --secret-key "${SK[$m]}" --bucket md5ab -q "$@"
}
for m in "${SIDES[@]}"; do
    bench "$m" --prefix warm/ --phases put -n 8 -s "$SIZE" -c "$STREAMS" >/dev/null
done

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); old $OLD, new $NEW; data on $(df -T "$WORK" | awk 'NR == 2 {print $2 " " $1}')"
echo
echo "| round | phase | binary | MB/s | p50 ms | CPU s per GB stored |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    for k in 0 1; do
        m=${SIDES[$(((r + k) % 2))]}
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
print(f"| {r} | PUT {p['bytes'] // max(p['ops'], 1) >> 20} MiB x{p['ops']} | {m} | {p['mb_per_sec']:.1f}{err} | {p['p50_ms']:.0f} | {cpu:.2f} |")
PY
    done
    for k in 0 1; do
        m=${SIDES[$(((r + k) % 2))]}
        samples="$WORK/$m-$r.mp.cpu"
        (while :; do echo "$(date +%s.%N) $(cpu "${PID[$m]}")"; sleep 0.1; done) >"$samples" &
        SAMPLER=$!
        start=$(date +%s.%N)
        bench "$m" --prefix "mp$r/" --phases multipart --multipart-size "$MP" --part-size 16Mi -c 4 \
            --json "$WORK/$m-$r.mp.json" >/dev/null
        kill "$SAMPLER"
        wait "$SAMPLER" 2>/dev/null || true
        python3 - "$r" "$m" "$start" "$samples" "$WORK/$m-$r.mp.json" <<'PY'
import json, sys
r, m, start, samples, path = sys.argv[1:]
p = [x for x in json.load(open(path))["phases"] if x["phase"] == "mp-put"][0]
pts = [tuple(map(float, l.split())) for l in open(samples) if len(l.split()) == 2]
t0, t1 = float(start), float(start) + p["seconds"]
def at(t):
    # CPU seconds at time t, interpolated between the samples around it.
    prev = pts[0]
    for q in pts:
        if q[0] >= t:
            if q[0] == prev[0]:
                return q[1]
            return prev[1] + (q[1] - prev[1]) * (t - prev[0]) / (q[0] - prev[0])
        prev = q
    return pts[-1][1]
cpu = (at(t1) - at(t0)) / (p["bytes"] / 1e9)
err = f" ({p['errors']} errors)" if p["errors"] else ""
print(f"| {r} | multipart {p['bytes'] >> 20} MiB | {m} | {p['mb_per_sec']:.1f}{err} | {p['p50_ms']:.0f} | {cpu:.2f} |")
PY
    done
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
