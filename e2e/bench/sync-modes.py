#!/usr/bin/env python3
"""How many fsynced 1 MiB shard files per second this disk takes, by way of making them durable.

Each writer does what a provider does per shard: write a temp file, make it durable, rename it
into place, make the rename durable. The modes:
  file      fsync the file, rename, fsync the directory (shared: one fsync covers every rename
            before it started, as provider/src/store/dirsync.rs does)          -- today
  fdata     as file, with fdatasync(2) in place of fsync(2)
  syncfs    write, rename, then wait for one syncfs(2) of the filesystem that started after the
            rename (shared the same way)                                    -- candidate (b)
  syncfs2   write, syncfs (shared), rename, directory fsync (shared): the temp name is kept until
            the bytes are durable                                           -- (b), safer order
  sfr       sync_file_range(WRITE) right after the write, fdatasync, rename, directory fsync
            (shared)                                                        -- candidate (c)
  none      write and rename, nothing durable: the ceiling, not a mode a provider may run
Modes alternate in rounds so a noisy neighbour hurts them alike.

Usage: sync-modes.py [--writers 48] [--seconds 8] [--rounds 3] [--size 1048576] [--dir DIR]
                     [--modes none,file,syncfs,syncfs2,sfr]
"""
import argparse, ctypes, os, shutil, statistics, tempfile, threading, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
SYNC_FILE_RANGE_WRITE = 2


def check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Shared:
    """One flush covers every waiter that arrived before it started (a group commit)."""

    def __init__(self, flush):
        self.flush, self.cv = flush, threading.Condition()
        self.taken = self.synced = self.count = 0
        self.running = False

    def wait(self):
        with self.cv:
            self.taken += 1
            ticket = self.taken
            while True:
                if self.synced >= ticket:
                    return
                if self.running:
                    self.cv.wait()
                    continue
                self.running, covers = True, self.taken
                self.count += 1
                self.cv.release()
                try:
                    self.flush()
                finally:
                    self.cv.acquire()
                    self.running = False
                    self.synced = max(self.synced, covers)
                    self.cv.notify_all()


def run(mode, root, writers, seconds, size):
    d = tempfile.mkdtemp(dir=root, prefix=f"{mode}-")
    dfd = os.open(d, os.O_RDONLY)
    dirsync = Shared(lambda: os.fsync(dfd))
    fssync = Shared(lambda: check(libc.syncfs(dfd)))
    data = os.urandom(size)
    done, stop = [0] * writers, time.monotonic() + seconds
    lat = []
    files_synced = [0]

    def writer(w):
        n = 0
        while time.monotonic() < stop:
            t0 = time.monotonic()
            tmp, final = f"{d}/.tmp-{w}-{n}", f"{d}/{w}-{n}.shard"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            if mode == "none":
                os.close(fd)
                os.rename(tmp, final)
            elif mode == "file":
                os.fsync(fd)
                files_synced[0] += 1
                os.close(fd)
                os.rename(tmp, final)
                dirsync.wait()
            elif mode == "fdata":
                os.fdatasync(fd)
                files_synced[0] += 1
                os.close(fd)
                os.rename(tmp, final)
                dirsync.wait()
            elif mode == "syncfs":
                os.close(fd)
                os.rename(tmp, final)
                fssync.wait()
            elif mode == "syncfs2":
                os.close(fd)
                fssync.wait()
                os.rename(tmp, final)
                dirsync.wait()
            elif mode == "sfr":
                check(libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0),
                                           SYNC_FILE_RANGE_WRITE))
                os.fdatasync(fd)
                files_synced[0] += 1
                os.close(fd)
                os.rename(tmp, final)
                dirsync.wait()
            lat.append(time.monotonic() - t0)
            n += 1
            # Keep the directory small, as a provider's unlinks would.
            if n % 32 == 0:
                for k in range(n - 32, n):
                    os.unlink(f"{d}/{w}-{k}.shard")
        done[w] = n

    t0 = time.monotonic()
    ts = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - t0
    os.close(dfd)
    shutil.rmtree(d)
    files = sum(done)
    lat.sort()
    return {
        "files_s": files / wall,
        "flushes_per_file": (dirsync.count + fssync.count + files_synced[0]) / max(files, 1),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--dir", default=os.environ.get("BENCH_TMP", "/var/tmp"))
    ap.add_argument("--modes", default="file,syncfs,syncfs2,sfr")
    a = ap.parse_args()
    modes = a.modes.split(",")
    res = {m: [] for m in modes}
    for r in range(a.rounds):
        for k in range(len(modes)):
            m = modes[(r + k) % len(modes)]
            x = run(m, a.dir, a.writers, a.seconds, a.size)
            res[m].append(x)
            print(f"round {r} {m:8} {x['files_s']:7.1f} files/s  "
                  f"{x['flushes_per_file']:.3f} flushes/file  p50 {x['p50_ms']:.0f} ms  "
                  f"p99 {x['p99_ms']:.0f} ms", flush=True)
    print(f"\n| mode | files/s (median of {a.rounds}) | runs | flushes per file | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for m in modes:
        xs = res[m]
        med = lambda k: statistics.median(x[k] for x in xs)
        runs = ", ".join(f"{x['files_s']:.0f}" for x in xs)
        print(f"| {m} | {med('files_s'):.0f} | {runs} | {med('flushes_per_file'):.3f} | "
              f"{med('p50_ms'):.0f} | {med('p99_ms'):.0f} |")


if __name__ == "__main__":
    main()
