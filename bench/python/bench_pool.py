#!/usr/bin/env python3
"""Pool benchmarks with Python's multiprocessing.Pool, in mp-bench's JSON-lines format:
start-up, map throughput (default chunking and chunksize 1), apply_async round trip, and the
speed-up of a CPU-bound map on 2 workers over the serial loop."""

import json
import multiprocessing as mp
import sys
import time


def emit(bench, unit, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr, flush=True)


def square(x):
    return x * x


def spin(n):
    # A CPU-bound task: an integer loop that cannot be optimised away.
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1000003
    return acc


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ctx = mp.get_context("fork")
    workers = 2

    starts = []
    for _ in range(reps):
        t = time.perf_counter()
        pool = ctx.Pool(workers)
        pool.apply(square, (1,))
        starts.append(time.perf_counter() - t)
        pool.terminate()
        pool.join()
    emit("pool.start", "s", "Pool(2) created and first apply answered", starts)

    with ctx.Pool(workers) as pool:
        pool.map(square, range(1000))
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            pool.map(square, range(100_000))
            rates.append(100_000 / (time.perf_counter() - t))
        emit("pool.map100k", "items/s", "map of x*x over 100k ints, default chunking, 2 workers",
             rates)

        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            pool.map(square, range(20_000), chunksize=1)
            rates.append(20_000 / (time.perf_counter() - t))
        emit("pool.map20k.chunk1", "items/s", "map of x*x over 20k ints, chunksize 1, 2 workers",
             rates)

        rtts = []
        batch = 1000
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(batch):
                pool.apply_async(square, (i,)).get()
            rtts.append((time.perf_counter() - t) / batch)
        emit("pool.apply_async", "s", "apply_async(x*x).get() round trip, mean of 1000", rtts)

        tasks = [2_000_000] * 8
        ratios = []
        for _ in range(max(1, reps // 2)):
            t = time.perf_counter()
            serial = [spin(n) for n in tasks]
            ts = time.perf_counter() - t
            t = time.perf_counter()
            par = pool.map(spin, tasks, chunksize=1)
            tp = time.perf_counter() - t
            assert par == serial
            ratios.append(ts / tp)
        emit("pool.cpu_speedup", "ratio",
             "serial time / pool.map time, 8 CPU-bound tasks on 2 workers", ratios)


if __name__ == "__main__":
    main()
