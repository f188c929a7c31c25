#!/usr/bin/env python3
"""Shared-state benchmarks with Python's multiprocessing, in mp-bench's JSON-lines format:
64 MiB shared_memory write/read bandwidth, and two processes incrementing Value('q')."""
import json
import multiprocessing as mp
import sys
import time
from multiprocessing import shared_memory

SIZE = 64 << 20
INCREMENTS = 500_000


def emit(bench, unit, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr, flush=True)


def rate(reps, f):
    f()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(SIZE / (time.perf_counter() - t))
    return out


def increment(v, go):
    while go.value == 0:
        pass
    for _ in range(INCREMENTS):
        with v.get_lock():
            v.value += 1


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    src = bytearray(b"\x5a" * SIZE)
    dst = bytearray(SIZE)
    shm = shared_memory.SharedMemory(create=True, size=SIZE)
    buf = shm.buf

    def write():
        buf[:] = src

    def read():
        dst[:] = buf
    emit("shm.write64MiB", "B/s", "shared_memory.SharedMemory buf[:] = bytes", rate(reps, write))
    emit("shm.read64MiB", "B/s", "bytearray[:] = shared_memory buf", rate(reps, read))
    del buf
    shm.close()
    shm.unlink()

    ctx = mp.get_context("fork")
    rates = []
    for _ in range(min(reps, 5)):
        v = ctx.Value("q", 0, lock=True)
        go = ctx.Value("q", 0, lock=False)
        ps = [ctx.Process(target=increment, args=(v, go)) for _ in range(2)]
        for p in ps:
            p.start()
        time.sleep(0.02)
        t = time.perf_counter()
        go.value = 1
        for p in ps:
            p.join()
        secs = time.perf_counter() - t
        assert v.value == 2 * INCREMENTS, "lost increments"
        rates.append(2 * INCREMENTS / secs)
    emit("value.locked_incr", "ops/s", "two processes incrementing Value('q', lock=True) at once",
         rates)


if __name__ == "__main__":
    main()
