#!/usr/bin/env python3
"""Summarises `strace -f -tt -T -yy` of `sublet dev` during one PUT or GET as a timeline.

Usage: timeline.py TRACE LABEL S3_PORT PROVIDER_PORTS(comma-separated)

Socket I/O is grouped into spans (client body in, answer out, gateway to providers,
providers receiving, ...), file steps (shard temp files created, written, fsynced,
renamed, the directory fsynced, the SQLite WAL written and fsynced) are listed one by one.
Times are milliseconds since the first byte read from the client.
"""

import re
import sys
from collections import defaultdict

LINE = re.compile(r"^(\d+)\s+(\d+):(\d+):(\d+\.\d+) (\w+)\((.*)\) = (-?\d+)(?:<[^>]*>)?.*<(\d+\.\d+)>$")
UNFINISHED = re.compile(r"^(\d+)\s+(\S+) (\w+)\((.*) <unfinished \.\.\.>$")
RESUMED = re.compile(r"^(\d+)\s+\S+ <\.\.\. (\w+) resumed>(.*)$")
# A socket's description holds "->": it ends at "]>", a file's at the first ">".
FD = re.compile(r"^(\d+)<(TCP:\[[^\]]*\]|[^>]*)>")
TCP = re.compile(r"TCP:\[(?:[\d.]+):(\d+)->(?:[\d.]+):(\d+)\]")


def main():
    path, label, s3_port, provider_ports = sys.argv[1:5]
    s3_port = int(s3_port)
    providers = {int(p) for p in provider_ports.split(",") if p}
    events = []
    # Under -f a call that another thread interrupts is split in two lines:
    # `TID TIME call(args <unfinished ...>` and `TID TIME <... call resumed>rest`.
    pending = {}
    for raw in open(path, errors="replace"):
        raw = raw.rstrip("\n")
        u = UNFINISHED.match(raw)
        if u:
            pending[u.group(1)] = (u.group(2), u.group(3), u.group(4))
            continue
        r = RESUMED.match(raw)
        if r:
            started = pending.pop(r.group(1), None)
            if started is None or started[1] != r.group(2):
                continue
            raw = f"{r.group(1)} {started[0]} {started[1]}({started[2]}{r.group(3)}"
        m = LINE.match(raw.strip())
        if not m:
            continue
        tid, h, mi, s, call, args, ret, dur = m.groups()
        t = (int(h) * 3600 + int(mi) * 60 + float(s)) * 1e3
        fd = FD.match(args)
        target = fd.group(2) if fd else ""
        events.append((t, int(tid), call, args, int(ret), float(dur) * 1e3, target))
    if not events:
        print(f"{label}: no events traced")
        return
    events.sort()

    def kind(call, target, args):
        tcp = TCP.search(target)
        if tcp:
            local, remote = int(tcp.group(1)), int(tcp.group(2))
            out = call in ("write", "writev", "sendto", "sendmsg")
            if local == s3_port:
                return "client: answer sent" if out else "client: request read"
            if remote in providers:
                return "gateway -> providers (shard bytes, TLS)" if out else "gateway <- providers"
            if local in providers:
                return "providers -> gateway" if out else "providers <- gateway"
            return None
        if call == "openat" and "O_CREAT" in args:
            return "file created: " + short(args)
        if call in ("fsync", "fdatasync"):
            return f"{call}: " + short(target)
        if call in ("rename", "renameat2"):
            return "rename"
        if call == "pwrite64" or call == "write":
            if target.endswith("-wal") or target.endswith(".db") or "sqlite" in target:
                return "SQLite write: " + short(target)
            if target.startswith("/"):
                return "file write: " + short(target)
        if call == "read" and target.startswith("/") and "/proc" not in target:
            return "file read: " + short(target)
        return None

    # Time 0: the request line of the object's PUT or GET (not the bench's bucket check).
    start = next((e[0] for e in events if kind(e[2], e[6], e[3]) == "client: request read"
                  and "/obj/" in e[3]), events[0][0])
    spans = defaultdict(list)  # kind -> [first, last, calls, bytes, threads]
    singles = []
    for t, tid, call, args, ret, dur, target in events:
        k = kind(call, target, args)
        if k is None:
            continue
        rel = t - start
        if k.startswith(("client", "gateway", "providers", "file write", "SQLite write", "file read")):
            group = k if not k.startswith(("file write", "file read")) else k.split(":")[0]
            cur = spans[group]
            if cur and rel - cur[-1][1] < 2.0:
                s = cur[-1]
                s[1] = rel + dur
                s[2] += 1
                s[3] += max(ret, 0)
                s[4].add(tid)
            else:
                cur.append([rel, rel + dur, 1, max(ret, 0), {tid}])
        else:
            singles.append((rel, dur, tid, k))
    rows = []
    for k, lst in spans.items():
        for first, last, calls, nbytes, tids in lst:
            rows.append((first, last - first, f"{k}: {calls} calls, {nbytes / 1024:.0f} KiB, {len(tids)} threads"))
    for rel, dur, tid, k in singles:
        rows.append((rel, dur, f"{k} (thread {tid})"))
    rows.sort()
    print(f"\n### Timeline of one {label}\n")
    print("| starts at ms | lasts ms | step |")
    print("|---|---|---|")
    for at, dur, what in rows:
        print(f"| {at:.1f} | {dur:.1f} | {what} |")
    fsyncs = [r for r in singles if r[3].startswith(("fsync", "fdatasync"))]
    if fsyncs:
        print(f"\n{len(fsyncs)} fsyncs, {sum(r[1] for r in fsyncs):.1f} ms in them in all, "
              f"the longest {max(r[1] for r in fsyncs):.1f} ms.")


def short(s):
    s = s.split(",")[1].strip().strip('"') if s.startswith("AT_FDCWD") else s
    parts = s.rstrip("/").split("/")
    return "/".join(parts[-2:])


if __name__ == "__main__":
    main()
