#!/usr/bin/env python3
"""Python's counterparts of the shm-backend benchmarks (bench/src/shm.rs), in mp-bench's
JSON-lines format: Pipe round trip with an echo child, Queue small-item throughput, and
Pipe 1 MiB one-way throughput. Python has no shared-memory pipe: these are its pipes."""
import json
import multiprocessing as mp
import sys
import time


def emit(bench, unit, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr, flush=True)


def echo(conn):
    while True:
        m = conn.recv_bytes()
        if m == b"stop":
            return
        conn.send_bytes(m)


def producer(q, n):
    for i in range(n):
        q.put(i)


def sender(conn, n, size):
    msg = b"x" * size
    conn.recv_bytes()
    for _ in range(n):
        conn.send_bytes(msg)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=echo, args=(b,))
    p.start()
    b.close()  # the child's end: closed here so the child sees EOF when `a` closes
    batch = 2000
    rtts = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        for _ in range(batch):
            a.send_bytes(b"12345678")
            a.recv_bytes()
        rtts.append((time.perf_counter() - t) / batch)
    a.send_bytes(b"stop")
    p.join()
    emit("shm.rtt8", "s", "Pipe() send_bytes/recv_bytes, echo child (fork)", rtts[1:])

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
    emit("shm.queue.small", "items/s", "Queue: 100k ints from a child process", rates)

    size, count = 1 << 20, 64
    rates = []
    for _ in range(reps):
        a, b = ctx.Pipe()
        p = ctx.Process(target=sender, args=(b, count, size))
        p.start()
        b.close()
        t = time.perf_counter()
        a.send_bytes(b"go")
        for _ in range(count):
            a.recv_bytes()
        rates.append(size * count / (time.perf_counter() - t))
        p.join()
    emit("shm.1mib", "B/s", "Pipe() 1 MiB messages one way from a child", rates)


if __name__ == "__main__":
    main()
