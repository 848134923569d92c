#!/usr/bin/env bash
# One large multipart upload (default 10 GiB, parts streamed from a generator, never held
# whole) read back in verified ranges; prints sublet-bench's table and the peak RSS of the
# server process with its RSS sampled every second, to show whether memory grows with size.
#
# MODE=dev (default): a fresh `sublet dev`, whose process holds the gateway and its six
# in-process providers. MODE=serve: `sublet serve` (SQLite metadata, EC 4+2 encrypted) on
# six separate `sublet-provider` processes, so the RSS is the gateway's alone.
#
# Usage: e2e/bench/big-upload.sh [sublet-bench options...]   (e.g. --multipart-size 2Gi)
# Environment: BENCH_TMP (default /var/tmp, a real disk: EC 4+2 stores 1.5x the size),
#              SIZE (default 10Gi), PART (default 64Mi), STREAMS (default 4), KEEP=1,
#              MODE (dev or serve); SUBLET, PROVIDER and BENCH (binaries to use instead of
#              the release builds under CARGO_TARGET_DIR) with NO_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MODE=${MODE:-dev}
if [[ ${NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
        cargo build --release --quiet -p sublet-provider --bin sublet-provider &&
        cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
fi
SUBLET=${SUBLET:-$TARGET/release/sublet}
PROVIDER=${PROVIDER:-$TARGET/release/sublet-provider}
BENCH=${BENCH:-$TARGET/release/sublet-bench}
log() { echo "big-upload: $*" >&2; }

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-big.XXXXXX")
PIDS=()
# shellcheck source=serve-cluster.sh
source "$(dirname "$0")/serve-cluster.sh"
DEV=
SAMPLER=
cleanup() {
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
    if [[ -n $DEV ]]; then
        kill -INT "$DEV" 2>/dev/null || true
        wait "$DEV" 2>/dev/null || true
    fi
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
PORT=$(free_port)
ADMIN=$(free_port)
if [[ $MODE == serve ]]; then
    start_providers
    gateway_yaml "$WORK/gateway" "$PORT" "$ADMIN"
    RUST_LOG=warn "$SUBLET" serve --config "$WORK/gateway/sublet.yaml" \
        >"$WORK/dev.out" 2>"$WORK/dev.log" </dev/null &
    AK=bench
    SK=bench-secret-0123456789
else
    "$SUBLET" dev --dir "$WORK/dev" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
        >"$WORK/dev.out" 2>"$WORK/dev.log" </dev/null &
fi
DEV=$!
for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$DEV" || { tail "$WORK/dev.log" >&2; exit 1; }
    sleep 0.1
done
head -1 "$WORK/dev.out" >&2
if [[ $MODE != serve ]]; then
    AK=$(sed -n 's/^access_key=//p' "$WORK/dev/credentials")
    SK=$(sed -n 's/^secret_key=//p' "$WORK/dev/credentials")
fi

(while kill -0 "$DEV" 2>/dev/null; do
    echo "$(date +%s.%N) $(awk '/VmRSS|VmHWM/ {printf "%s ", $2}' "/proc/$DEV/status")"
    sleep 1
done) >"$WORK/rss.txt" &
SAMPLER=$!

rc=0
"$BENCH" --endpoint "http://127.0.0.1:$PORT" \
    --access-key "$AK" --secret-key "$SK" \
    --bucket big --phases multipart --multipart-size "${SIZE:-10Gi}" --part-size "${PART:-64Mi}" \
    -c "${STREAMS:-4}" --json "$WORK/phases.json" "$@" || rc=$?

echo "sublet $MODE peak RSS (VmHWM): $(awk '/VmHWM/ {print $2}' "/proc/$DEV/status") KiB"
python3 - "$WORK/rss.txt" "$WORK/phases.json" <<'EOF'
import json, sys
# Each sample: time, VmHWM, VmRSS (KiB, in /proc's order).
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 3]
rss = [int(r[2]) // 1024 for r in rows]
if rss:
    n = len(rss)
    q = [rss[min(n - 1, i * n // 4)] for i in range(4)] + [rss[-1]]
    print(f"RSS MiB sampled each second: max {max(rss)}, at 0/25/50/75/100% of the run: {q}")
    try:
        phases = json.load(open(sys.argv[2]))["phases"]
    except (OSError, ValueError, KeyError):
        phases = []
    # The phases ran one after the other, the first from the first sample on: the peak
    # (VmHWM) at the end of each, as far as one-second samples tell.
    end = float(rows[0][0])
    for p in phases:
        end += p["seconds"]
        hwm = max((int(r[1]) for r in rows if float(r[0]) <= end + 0.5), default=0)
        print(f"peak RSS (VmHWM) by the end of {p['phase']}: {hwm // 1024} MiB")
EOF
exit $rc
