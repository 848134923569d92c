#!/usr/bin/env bash
# What the metadata journal costs small writes: `sublet serve` (SQLite metadata, EC 4+2,
# encrypted) on six local `sublet-provider` processes, driven by sublet-bench's 4 KiB
# phases. With BEFORE set to another `sublet` binary (e.g. one built from a commit before
# the journal), both run in turn against the same providers, alternating ROUNDS times, and
# the table shows each run; the journal's own figures (segments, changes per segment)
# come from the gateway's /metrics.
#
# Usage: e2e/bench/journal-cost.sh [sublet-bench options...]
#   e.g. BEFORE=/tmp/sublet-before e2e/bench/journal-cost.sh --small-objects 1000 -c 8
# Environment:
#   BEFORE     a second sublet binary to compare with (optional)
#   ROUNDS     rounds per binary (default 2)
#   BENCH_TMP  where providers and gateways keep their data (default /var/tmp)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-2}
log() { echo "journal-cost: $*" >&2; }

log "building release binaries"
(cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
    cargo build --release --quiet -p sublet-provider --bin sublet-provider &&
    cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
AFTER=$TARGET/release/sublet
PROVIDER=$TARGET/release/sublet-provider
BENCH=$TARGET/release/sublet-bench

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-journal.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=serve-cluster.sh
source "$(dirname "$0")/serve-cluster.sh"
start_providers

run() { # label binary round
    local label=$1 bin=$2 round=$3 dir=$WORK/g-$1-$3 port admin
    shift 3
    port=$(free_port)
    admin=$(free_port)
    gateway_yaml "$dir" "$port" "$admin"
    RUST_LOG=warn "$bin" serve --config "$dir/sublet.yaml" >"$dir/out.log" 2>&1 </dev/null &
    local pid=$!
    wait_port "$port"
    log "$label round $round"
    "$BENCH" --endpoint "http://127.0.0.1:$port" --access-key bench \
        --secret-key bench-secret-0123456789 --bucket bench --prefix "r$round/" \
        --phases small-put,small-get --label "$label" --json "$WORK/$label-$round.json" "$@" \
        >"$WORK/$label-$round.txt"
    cat "$WORK/$label-$round.txt" >&2
    curl -s "http://127.0.0.1:$admin/metrics" | grep '^sublet_gateway_journal' \
        >"$WORK/$label-$round.metrics" || true
    kill -INT "$pid"
    wait "$pid" || true
    if [[ $label == journal ]]; then
        # The disk is lost right after the run: time the recovery (no snapshot was due
        # yet, so every change comes back from the journal).
        rm -f "$dir"/data/metadata.db*
        local t0 t1
        t0=$(date +%s.%N)
        "$bin" recover --config "$dir/sublet.yaml" >"$WORK/$label-$round.recover" 2>&1 || {
            log "recover failed:"; cat "$WORK/$label-$round.recover" >&2; exit 1; }
        t1=$(date +%s.%N)
        echo "seconds=$(python3 -c "print(round($t1 - $t0, 2))")" >>"$WORK/$label-$round.recover"
        cat "$WORK/$label-$round.recover" >&2
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    if [[ -n ${BEFORE:-} ]]; then run before "$BEFORE" "$round" "$@"; fi
    run journal "$AFTER" "$round" "$@"
done

python3 - "$WORK" <<'EOF'
import json, pathlib, re, sys
work = pathlib.Path(sys.argv[1])
print("| build | round | small-put ops/s | p50 / p99 ms | small-get ops/s | journal segments | changes per segment | recover |")
print("|---|---|---|---|---|---|---|---|")
for f in sorted(work.glob("*.json")):
    label, rnd = f.stem.rsplit("-", 1)
    ph = {p["phase"]: p for p in json.loads(f.read_text())["phases"]}
    put, get = ph["small-put"], ph["small-get"]
    m = (work / f"{f.stem}.metrics").read_text() if (work / f"{f.stem}.metrics").exists() else ""
    seg = sum(float(v) for v in re.findall(r'journal_segments_total\{result="stored"\} (\S+)', m))
    ent = sum(float(v) for v in re.findall(r'^sublet_gateway_journal_entries_total (\S+)', m, re.M))
    per = f"{ent / seg:.1f}" if seg else "-"
    rec = work / f"{f.stem}.recover"
    recover = "-"
    if rec.exists():
        text = rec.read_text()
        secs = re.search(r"seconds=(\S+)", text)
        applied = re.search(r"(\d+) changes applied", text)
        lost = "NOT RECOVERED" in text or "NOT REPLAYED" in text
        recover = (f"{secs.group(1)} s, {applied.group(1) if applied else '?'} changes"
                   + (", **losses**" if lost else ""))
    print(f"| {label} | {rnd} | {put['ops_per_sec']:.1f} | {put['p50_ms']:.1f} / {put['p99_ms']:.1f} "
          f"| {get['ops_per_sec']:.1f} | {int(seg) if seg else '-'} | {per} | {recover} |")
EOF
