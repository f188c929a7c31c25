#!/usr/bin/env python3
"""Python's counterparts of bench/src/zerocopy.rs: a 64 MiB array to a child and back, the
child reading its first and last byte. Three ways, standard library only:

- python: the everyday path, the array (bytes) pickled through a Pipe both ways;
- python_shm: the hand-made zero-copy path, a shared_memory.SharedMemory whose name is sent;
- python_pickle5: pickle protocol 5 with out-of-band buffers over shared_memory (the pickle
  carries the buffer out of band; the receiver unpickles it onto the segment's memory).

Usage: bench_zerocopy.py <reps> [--quick] [--tag <suffix>]
"""
import json
import multiprocessing as mp
import pickle
import sys
import time
from multiprocessing import shared_memory

SIZE = 64 << 20
TAG = ""


def emit(bench, impl, unit, note, samples):
    print(json.dumps({"bench": bench + TAG, "impl": impl, "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} {impl:<14} {len(samples)} samples", file=sys.stderr, flush=True)


def echo_pickled(conn):
    while True:
        obj = conn.recv()
        if obj is None:
            return
        _ = obj[0] ^ obj[-1]
        conn.send(obj)


def echo_name(conn):
    while True:
        name = conn.recv()
        if name is None:
            return
        s = shared_memory.SharedMemory(name)
        _ = s.buf[0] ^ s.buf[-1]
        s.close()
        conn.send(name)


def oob_pickle(view):
    """Pickles `view` with its buffer out of band; returns the pickle bytes."""
    return pickle.dumps(pickle.PickleBuffer(view), protocol=5, buffer_callback=lambda b: False)


def echo_pickle5(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            return
        data, name = msg
        s = shared_memory.SharedMemory(name)
        view = pickle.loads(data, buffers=[s.buf])
        _ = view[0] ^ view[-1]
        back = oob_pickle(view)
        del view
        s.close()
        conn.send((back, name))


def serve(ctx, target):
    a, b = ctx.Pipe()
    p = ctx.Process(target=target, args=(b,))
    p.start()
    b.close()
    return a, p


def stop(a, p):
    a.send(None)
    p.join()


def main():
    global TAG
    args = sys.argv[1:]
    if "--tag" in args:
        TAG = args[args.index("--tag") + 1]
    reps = int(args[0]) if args and args[0].isdigit() else 7
    ctx = mp.get_context("fork")
    per_sample = 20

    # Everyday path: the bytes pickled through the pipe, both ways.
    data = b"\x5a" * SIZE
    a, p = serve(ctx, echo_pickled)
    a.send(data)
    a.recv()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        a.send(data)
        back = a.recv()
        samples.append(time.perf_counter() - t)
        del back
    stop(a, p)
    emit("zc.64MiB", "python", "s",
         "64 MiB bytes pickled through a Pipe to a fork child and back (Python's everyday path)",
         samples)

    shm = shared_memory.SharedMemory(create=True, size=SIZE)
    try:
        shm.buf[:] = data
        # Hand-made zero-copy: the segment's name travels.
        a, p = serve(ctx, echo_name)
        for _ in range(5):
            a.send(shm.name)
            a.recv()
        samples = []
        for _ in range(reps * 3):
            t = time.perf_counter()
            for _ in range(per_sample):
                a.send(shm.name)
                a.recv()
            samples.append((time.perf_counter() - t) / per_sample)
        stop(a, p)
        emit("zc.64MiB", "python_shm", "s",
             "a 64 MiB shared_memory.SharedMemory whose name is sent to a fork child and back; "
             "the child opens it, reads its first and last byte, closes it; mean of 20",
             samples)

        # Pickle protocol 5, out-of-band buffer over shared_memory.
        a, p = serve(ctx, echo_pickle5)
        for _ in range(5):
            a.send((oob_pickle(shm.buf), shm.name))
            a.recv()
        samples = []
        for _ in range(reps * 3):
            t = time.perf_counter()
            for _ in range(per_sample):
                a.send((oob_pickle(shm.buf), shm.name))
                back, _ = a.recv()
                view = pickle.loads(back, buffers=[shm.buf])
                del view
            samples.append((time.perf_counter() - t) / per_sample)
        stop(a, p)
        emit("zc.64MiB", "python_pickle5", "s",
             "pickle protocol 5 with the 64 MiB buffer out of band over shared_memory, to a fork "
             "child and back (each side unpickles onto the segment); mean of 20",
             samples)
    finally:
        shm.close()
        shm.unlink()


if __name__ == "__main__":
    main()
