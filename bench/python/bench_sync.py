#!/usr/bin/env python3
"""The Python twin of bench/src/sync.rs: uncontended Lock acquire+release, Event ping-pong
between two processes, Barrier(2) wait across two processes, with the standard library's
`multiprocessing` (default start method), in mp-bench's JSON-lines format."""

import json
import multiprocessing as mp
import sys
import time

SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 7
ROUNDS = 2000


def emit(bench, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": "s", "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr, flush=True)


def lock_uncontended():
    lock = mp.Lock()
    n = 200_000
    out = []
    for _ in range(SAMPLES):
        acquire, release = lock.acquire, lock.release
        t = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        out.append((time.perf_counter() - t) / n)
    return out


def ponger(ping, pong, rounds):
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def event_ping_pong():
    out = []
    for _ in range(SAMPLES):
        ping, pong = mp.Event(), mp.Event()
        p = mp.Process(target=ponger, args=(ping, pong, ROUNDS))
        p.start()
        ping.set(); pong.wait(); pong.clear()
        t = time.perf_counter()
        for _ in range(ROUNDS - 1):
            ping.set()
            pong.wait()
            pong.clear()
        out.append((time.perf_counter() - t) / (ROUNDS - 1))
        p.join()
    return out


def barrier_party(barrier, rounds):
    for _ in range(rounds):
        barrier.wait()


def barrier_wait():
    out = []
    for _ in range(SAMPLES):
        barrier = mp.Barrier(2)
        p = mp.Process(target=barrier_party, args=(barrier, ROUNDS))
        p.start()
        barrier.wait()
        t = time.perf_counter()
        for _ in range(ROUNDS - 1):
            barrier.wait()
        out.append((time.perf_counter() - t) / (ROUNDS - 1))
        p.join()
    return out


if __name__ == "__main__":
    emit("sync.lock_uncontended", "Lock acquire + release, one process", lock_uncontended())
    emit("sync.event_pingpong", "two Events, set/wait/clear round trip with a child",
         event_ping_pong())
    emit("sync.barrier2", "Barrier(2).wait() with a child process, per wait", barrier_wait())
