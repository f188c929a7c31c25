#!/usr/bin/env python3
"""Python's counterparts of bench/src/scaling.rs: start + join of N processes (fork, Python's
default here), wait() over N connections with one ready, a Queue fed by N producers, and a
Pool of N workers mapping short tasks with chunksize 1. Series `scale.<what>.<N>`.

Usage: bench_scaling.py <reps> [--quick] [--tag <suffix>]
"""
import json
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import wait

TAG = ""
ITEMS = 20_000


def emit(bench, impl, unit, note, samples):
    print(json.dumps({"bench": bench + TAG, "impl": impl, "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<22} {impl:<8} {len(samples)} samples", file=sys.stderr, flush=True)


def noop():
    pass


def square(x):
    return x * x


def produce(q, n):
    for i in range(n):
        q.put(i)


def main():
    global TAG
    args = sys.argv[1:]
    if "--tag" in args:
        TAG = args[args.index("--tag") + 1]
    quick = "--quick" in args
    reps = int(args[0]) if args and args[0].isdigit() else 7
    reps = max(1, min(reps, 5))
    sizes = [1, 4, 16] if quick else [1, 4, 16, 64, 256]
    ctx = mp.get_context("fork")
    for n in sizes:
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            ps = [ctx.Process(target=noop) for _ in range(n)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            samples.append(time.perf_counter() - t)
        emit(f"scale.start_join.{n}", "python", "s",
             f"start {n} processes (fork), then join them all: total time", samples)

        pairs = [ctx.Pipe() for _ in range(n)]
        ends = [b for _, b in pairs]
        rounds = 300
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(rounds):
                k = (i * 7919) % n
                pairs[k][0].send_bytes(b"x")
                ready = wait(ends, timeout=10)
                assert ready == [ends[k]]
                ends[k].recv_bytes()
            samples.append((time.perf_counter() - t) / rounds)
        emit(f"scale.wait.{n}", "python", "s",
             f"send on one of {n} Pipes, connection.wait() over all {n} ends, recv: per round",
             samples)
        for a, b in pairs:
            a.close()
            b.close()

        samples = []
        each = ITEMS // n
        for _ in range(reps):
            q = ctx.Queue()
            t = time.perf_counter()
            ps = [ctx.Process(target=produce, args=(q, each)) for _ in range(n)]
            for p in ps:
                p.start()
            for _ in range(each * n):
                q.get()
            samples.append(each * n / (time.perf_counter() - t))
            for p in ps:
                p.join()
        emit(f"scale.queue.{n}", "python", "items/s",
             f"{ITEMS} ints put by {n} producer processes (fork), got by the parent", samples)

    for n in [sizes[0], 2] + sizes[1:]:
        with ctx.Pool(n) as pool:
            pool.map(square, range(2 * n))
            samples = []
            for _ in range(reps):
                t = time.perf_counter()
                pool.map(square, range(ITEMS), chunksize=1)
                samples.append(ITEMS / (time.perf_counter() - t))
        emit(f"scale.pool.{n}", "python", "items/s",
             f"Pool({n}).map(x*x) over {ITEMS} items, chunksize 1", samples)


if __name__ == "__main__":
    main()
