#!/usr/bin/env python3
"""The Python twin of `crates/mp-core/examples/bench_sync.rs`: uncontended Lock
acquire+release, Event ping-pong between two processes, Barrier(2) wait across two processes,
with the standard library's `multiprocessing` (default start method). Prints JSON lines
{"name", "unit", "median", "p10", "p90"}; names end in `_python`.
"""

import json
import multiprocessing as mp
import time

SAMPLES = 21
ROUNDS = 2000


def emit(name, unit, samples):
    samples = sorted(samples)
    at = lambda q: samples[round((len(samples) - 1) * q)]
    print(json.dumps({"name": name + "_python", "unit": unit, "median": round(at(0.5), 3),
                      "p10": round(at(0.1), 3), "p90": round(at(0.9), 3)}), flush=True)


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
        out.append((time.perf_counter() - t) * 1e9 / n)
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
        out.append((time.perf_counter() - t) * 1e6 / (ROUNDS - 1))
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
        out.append((time.perf_counter() - t) * 1e6 / (ROUNDS - 1))
        p.join()
    return out


if __name__ == "__main__":
    emit("lock_uncontended", "ns/op", lock_uncontended())
    emit("event_ping_pong", "us/roundtrip", event_ping_pong())
    emit("barrier2_wait", "us/wait", barrier_wait())
