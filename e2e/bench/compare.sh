#!/usr/bin/env bash
# Runs the same sublet-bench phases against three servers started side by side:
#   ec     sublet dev, default plan (erasure 4+2, AES-256-GCM)
#   r1     sublet dev with a 1-replica, unencrypted plan (SUBLET_DEV_PLAN_FILE)
#   s3sfs  s3s-fs, the s3s example server on a plain directory (the baseline)
# Phase groups alternate between the servers (the order rotates each group) so a noisy
# neighbour hurts all three alike. Prints per-phase figures, the ratios sublet/s3s-fs
# and each server's peak RSS (VmHWM) as a Markdown table.
#
# Usage: e2e/bench/compare.sh [sublet-bench options...]
#   e.g. e2e/bench/compare.sh --objects 16 --size 64Mi -c 8 --list-keys 5000
# Environment:
#   BENCH_TMP        where the servers keep their data (default /var/tmp; use a real disk,
#                    not tmpfs); a fresh directory is made inside and removed afterwards
#   BENCH_GROUPS     phase groups, space-separated (default below)
#   BENCH_OUT        directory for the JSON results and the table (default ./bench-compare)
#   S3S_FS_VERSION   s3s-fs version to install (default 0.14.1, same s3s as sublet)
#   S3S_FS_ROOT      where s3s-fs is installed (default ~/.cache/sublet-bench/s3s-fs-VERSION)
#   KEEP=1           keep the data directory
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
S3S_FS_VERSION=${S3S_FS_VERSION:-0.14.1}
S3S_FS_ROOT=${S3S_FS_ROOT:-$HOME/.cache/sublet-bench/s3s-fs-$S3S_FS_VERSION}
BENCH_GROUPS=${BENCH_GROUPS:-"put,get small-put,small-get multipart mixed list"}
BENCH_OUT=$(mkdir -p "${BENCH_OUT:-./bench-compare}" && cd "${BENCH_OUT:-./bench-compare}" && pwd)
TARGETS=(ec r1 s3sfs)

log() { echo "compare: $*" >&2; }

log "building release binaries"
# Two builds: one with both packages would unify their features and rebuild the gateway.
(cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
    cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
SUBLET=$TARGET/release/sublet
BENCH=$TARGET/release/sublet-bench

S3S_FS=$S3S_FS_ROOT/bin/s3s-fs
if [[ ! -x $S3S_FS ]]; then
    log "installing s3s-fs $S3S_FS_VERSION into $S3S_FS_ROOT"
    cargo install --quiet s3s-fs --version "$S3S_FS_VERSION" --features binary --root "$S3S_FS_ROOT"
fi

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/sublet-compare.XXXXXX")
declare -A PID PORT AK SK
cleanup() {
    for t in "${TARGETS[@]}"; do
        if [[ -n ${PID[$t]:-} ]] && kill -0 "${PID[$t]}" 2>/dev/null; then
            kill -INT "${PID[$t]}" 2>/dev/null || true
        fi
    done
    for t in "${TARGETS[@]}"; do
        [[ -n ${PID[$t]:-} ]] && wait "${PID[$t]}" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then
        log "data kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    local t=$1 port=$2
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if ! kill -0 "${PID[$t]}" 2>/dev/null; then
            log "$t exited before listening:"; tail -20 "$WORK/$t.log" >&2; exit 1
        fi
        sleep 0.1
    done
    log "$t did not listen on $port"; exit 1
}

cat >"$WORK/replicas1.yaml" <<'EOF'
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: single}
spec:
  redundancy: {replicas: 1}
  encryption: none
  inlineUpTo: 4Ki   # like sublet dev's default plan: only the redundancy and sealing differ
EOF

for t in ec r1; do
    PORT[$t]=$(free_port)
    env_plan=()
    [[ $t == r1 ]] && env_plan=(env "SUBLET_DEV_PLAN_FILE=$WORK/replicas1.yaml")
    "${env_plan[@]}" "$SUBLET" dev --dir "$WORK/$t" --listen "127.0.0.1:${PORT[$t]}" \
        --admin-listen "127.0.0.1:$(free_port)" >"$WORK/$t.out" 2>"$WORK/$t.log" </dev/null &
    PID[$t]=$!
    wait_port "$t" "${PORT[$t]}"
    AK[$t]=$(sed -n 's/^access_key=//p' "$WORK/$t/credentials")
    SK[$t]=$(sed -n 's/^secret_key=//p' "$WORK/$t/credentials")
    log "$t: $(head -1 "$WORK/$t.out") on port ${PORT[$t]}"
done

PORT[s3sfs]=$(free_port)
AK[s3sfs]=benchaccesskey
SK[s3sfs]=benchsecretkey-$RANDOM$RANDOM
mkdir -p "$WORK/s3sfs"
RUST_LOG=warn "$S3S_FS" --host 127.0.0.1 --port "${PORT[s3sfs]}" \
    --access-key "${AK[s3sfs]}" --secret-key "${SK[s3sfs]}" "$WORK/s3sfs" \
    >"$WORK/s3sfs.log" 2>&1 </dev/null &
PID[s3sfs]=$!
wait_port s3sfs "${PORT[s3sfs]}"
log "s3sfs: s3s-fs $S3S_FS_VERSION on port ${PORT[s3sfs]}"

PREFIX=compare-$(date +%s)/
rm -f "$BENCH_OUT"/*.json
g=0
for group in $BENCH_GROUPS; do
    for k in 0 1 2; do
        t=${TARGETS[$(((g + k) % 3))]}
        log "phases $group on $t"
        rc=0
        "$BENCH" --endpoint "http://127.0.0.1:${PORT[$t]}" --access-key "${AK[$t]}" \
            --secret-key "${SK[$t]}" --bucket bench --prefix "$PREFIX" --phases "$group" \
            --label "$t" --json "$BENCH_OUT/$t-$g.json" "$@" >"$BENCH_OUT/$t-$g.txt" || rc=$?
        cat "$BENCH_OUT/$t-$g.txt" >&2
        if [[ $rc != 0 && $rc != 3 ]]; then
            log "sublet-bench failed on $t (exit $rc)"; exit 1
        fi
    done
    g=$((g + 1))
done

for t in "${TARGETS[@]}"; do
    awk '/VmHWM/ {print $2}' "/proc/${PID[$t]}/status" >"$BENCH_OUT/$t.hwm_kib"
done

python3 - "$BENCH_OUT" <<'EOF' | tee "$BENCH_OUT/table.md"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
targets = ["ec", "r1", "s3sfs"]
phases, res = [], {t: {} for t in targets}
for f in sorted(out.glob("*.json"), key=lambda p: int(p.stem.split("-")[1])):
    doc = json.loads(f.read_text())
    for p in doc["phases"]:
        res[doc["label"]][p["phase"]] = p
        if p["phase"] not in phases:
            phases.append(p["phase"])
by_ops = {"small-put", "small-get", "list-fill", "list"}
def cell(p, metric):
    if p is None:
        return "-"
    v = p[metric]
    p99 = p["p99_ms"]
    err = f", **{p['errors']} err**" if p["errors"] else ""
    return f"{v:.1f} (p99 {p99:.0f} ms{err})" if p99 is not None else f"{v:.1f}{err}"
def ratio(a, b, metric):
    if a is None or b is None or not b[metric]:
        return "-"
    return f"{a[metric] / b[metric]:.2f}"
print("| phase | unit | sublet EC 4+2 enc | sublet 1 replica | s3s-fs | EC/s3s-fs | 1rep/s3s-fs |")
print("|---|---|---|---|---|---|---|")
for ph in phases:
    metric = "ops_per_sec" if ph in by_ops else "mb_per_sec"
    unit = "ops/s" if metric == "ops_per_sec" else "MB/s"
    ec, r1, fs = (res[t].get(ph) for t in targets)
    print(f"| {ph} | {unit} | {cell(ec, metric)} | {cell(r1, metric)} | {cell(fs, metric)} "
          f"| {ratio(ec, fs, metric)} | {ratio(r1, fs, metric)} |")
hwm = {t: int((out / f"{t}.hwm_kib").read_text().strip() or 0) for t in targets}
print(f"| peak RSS (VmHWM) | MiB | {hwm['ec'] / 1024:.0f} | {hwm['r1'] / 1024:.0f} | "
      f"{hwm['s3sfs'] / 1024:.0f} | {hwm['ec'] / max(hwm['s3sfs'], 1):.2f} | "
      f"{hwm['r1'] / max(hwm['s3sfs'], 1):.2f} |")
notes = {ph: next((res[t][ph].get("note") for t in targets if ph in res[t]), None) for ph in phases}
print()
for ph in phases:
    if notes[ph]:
        print(f"- {ph}: {notes[ph]}")
EOF
log "results in $BENCH_OUT"
