#!/usr/bin/env python3
"""Queue benchmarks with Python's multiprocessing, in mp-bench's JSON-lines format:
small-item throughput from a producer process, and round trips through two queues."""

import json
import multiprocessing as mp
import sys
import time


def emit(bench, unit, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr, flush=True)


def producer(q, n):
    for i in range(n):
        q.put(i)


def echo(there, back):
    while True:
        v = there.get()
        if v is None:
            return
        back.put(v)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ctx = mp.get_context("fork")
    n = 100_000
    rates = []
    for _ in range(reps):
        q = ctx.Queue()
        t = time.perf_counter()
        p = ctx.Process(target=producer, args=(q, n))
        p.start()
        for _ in range(n):
            q.get()
        rates.append(n / (time.perf_counter() - t))
        p.join()
    emit("queue.small", "items/s", "100k ints put by a child process, got by the parent", rates)

    there, back = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(there, back))
    p.start()
    for i in range(200):
        there.put(i)
        back.get()
    batch = 2000
    rtts = []
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(batch):
            there.put(i)
            back.get()
        rtts.append((time.perf_counter() - t) / batch)
    there.put(None)
    p.join()
    emit("queue.rtt", "s", "put on one queue, echoed back on another by a child process", rtts)


if __name__ == "__main__":
    main()
