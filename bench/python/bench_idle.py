#!/usr/bin/env python3
"""Python's counterparts of bench/src/idle.rs (Linux): CPU used over a window (10 s, 2 s with
--quick) by an idle Pool(2) (the parent and its workers), a child blocked in recv, and a
manager with no clients, all idle at once; and the RSS of a spawned child waiting in recv.

Usage: bench_idle.py <reps> [--quick] [--tag <suffix>]
"""
import json
import multiprocessing as mp
import os
import sys
import time

TAG = ""


def emit(bench, impl, unit, note, samples):
    print(json.dumps({"bench": bench + TAG, "impl": impl, "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<22} {impl:<8} {len(samples)} samples", file=sys.stderr, flush=True)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return None


def wait_in_recv(conn):
    try:
        conn.recv_bytes()
    except EOFError:
        pass


def inc(x):
    return x + 1


def main():
    global TAG
    args = sys.argv[1:]
    if "--tag" in args:
        TAG = args[args.index("--tag") + 1]
    window = 2.0 if "--quick" in args else 10.0
    pool = mp.get_context("fork").Pool(2)
    pool.apply(inc, (1,))
    spawn = mp.get_context("spawn")
    here, there = spawn.Pipe()
    child = spawn.Process(target=wait_in_recv, args=(there,))
    child.start()
    there.close()
    manager = mp.get_context("fork").Manager()
    server = manager._process.pid
    time.sleep(0.5)

    me = os.getpid()
    workers = [p.pid for p in pool._pool]
    hz = os.sysconf("SC_CLK_TCK")

    def pool_ticks():
        return cpu_ticks(me) + sum(cpu_ticks(w) for w in workers)

    before = (pool_ticks(), cpu_ticks(child.pid), cpu_ticks(server))
    t = time.perf_counter()
    time.sleep(window)
    secs = time.perf_counter() - t
    after = (pool_ticks(), cpu_ticks(child.pid), cpu_ticks(server))
    note = (f"share of one CPU used over {secs:.0f} s (user + system time from /proc; "
            f"tick = {1000 / hz:.0f} ms)")
    share = [(b - a) / hz / secs for a, b in zip(before, after)]
    emit("idle.pool", "python", "cpu",
         f"an idle Pool(2) (fork): the parent (all its threads) and both workers; {note}",
         [share[0]])
    emit("idle.recv", "python", "cpu", f"a spawned child blocked in recv_bytes; {note}",
         [share[1]])
    emit("idle.manager", "python", "cpu", f"a Manager() server with no clients; {note}",
         [share[2]])
    rss = rss_mib(child.pid)
    if rss is not None:
        emit("footprint.recv_child", "python", "MiB",
             "resident memory (VmRSS) of a spawned child waiting in recv_bytes", [rss])
    # The manager's server was forked after the pipe was made and holds a copy of `here`:
    # it must be gone before closing `here` can end the child's recv.
    manager.shutdown()
    here.close()
    child.join()
    pool.close()
    pool.join()


if __name__ == "__main__":
    main()
