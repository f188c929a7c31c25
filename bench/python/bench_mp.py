#!/usr/bin/env python3
"""The Python half of `cargo xtask bench`: the same measurements as `mp-bench`, with the
standard library's `multiprocessing` only.

Prints one JSON object per line on stdout, in the format of mp-bench:

    {"bench": "rtt8.process", "impl": "python", "unit": "s", "note": "...", "samples": [...]}

Each sample is one repetition; xtask computes median / p10 / p90. Progress goes to stderr.
`--quick` cuts the repetitions; `--only <group>` runs one group; `--tag <suffix>` is appended
to the benchmark names. `--cold SIZE COUNT` is internal: one cold throughput measurement in a
fresh interpreter (run by the main script through `subprocess`).
"""

import json
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import threading
import time

RTT_MSG = b"12345678"


TAG = ""  # --tag <suffix>: appended to every benchmark name


def emit(bench, impl, unit, note, samples):
    print(json.dumps({"bench": bench + TAG, "impl": impl, "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} {impl:<8} {len(samples)} samples", file=sys.stderr, flush=True)


def n(full, quick):
    return max(3, full // 5) if quick else full


# ------------------------------------------------------------------ start + join

def noop():
    pass


def start_join(quick):
    for method, full in (("spawn", 20), ("fork", 100), ("forkserver", 20)):
        if method not in mp.get_all_start_methods():
            print(f"  start method {method} unavailable, skipped", file=sys.stderr)
            continue
        ctx = mp.get_context(method)
        for _ in range(2):  # warm-up; launches the fork server
            p = ctx.Process(target=noop)
            p.start()
            p.join()
        samples = []
        for _ in range(n(full, quick)):
            t = time.perf_counter()
            p = ctx.Process(target=noop)
            p.start()
            p.join()
            samples.append(time.perf_counter() - t)
            assert p.exitcode == 0
        emit(f"start_join.{method}", "python", "s",
             f"get_context('{method}').Process(target=noop).start() + join()", samples)


# ------------------------------------------------------------------ round trip

def echo(conn, parent_end=None):
    if parent_end is not None:
        parent_end.close()  # a forked child inherits it; keeping it open would hide the EOF
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except (EOFError, OSError):
        pass


def rtt_batches(conn, batches, per_batch):
    send, recv = conn.send_bytes, conn.recv_bytes
    for _ in range(per_batch):
        send(RTT_MSG)
        recv()
    out = []
    for _ in range(batches):
        t = time.perf_counter()
        for _ in range(per_batch):
            send(RTT_MSG)
            recv()
        out.append((time.perf_counter() - t) / per_batch)
    return out


def rtt(quick):
    batches, per_batch = n(15, quick), 2000
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    p = ctx.Process(target=echo, args=(there, here))
    p.start()
    there.close()
    s = rtt_batches(here, batches, per_batch)
    here.close()
    p.join()
    emit("rtt8.process", "python", "s",
         "Pipe() send_bytes/recv_bytes, echo child (fork)", s)

    here, there = mp.Pipe()
    t = threading.Thread(target=echo, args=(there,))
    t.start()
    s = rtt_batches(here, batches, per_batch)
    here.close()
    t.join()
    there.close()
    emit("rtt8.thread", "python", "s", "Pipe() send_bytes/recv_bytes, echo thread", s)


# ------------------------------------------------------------------ throughput

def producer(conn, parent_end):
    parent_end.close()  # a forked child inherits it; keeping it open would hide the EOF
    try:
        while True:
            count, size = struct.unpack("<QQ", conn.recv_bytes())
            payload = b"\xa5" * size
            for _ in range(count):
                conn.send_bytes(payload)
    except (EOFError, OSError):
        pass


def tput_batch(conn, count, size):
    recv = conn.recv_bytes
    t = time.perf_counter()
    conn.send_bytes(struct.pack("<QQ", count, size))
    for _ in range(count):
        recv()
    return count * size / (time.perf_counter() - t)


def throughput(quick):
    reps = n(15, quick)
    ctx = mp.get_context("fork")
    for label, size, count in (("1KiB", 1 << 10, 20_000), ("64KiB", 64 << 10, 1_000),
                               ("1MiB", 1 << 20, 64)):
        here, there = ctx.Pipe()
        p = ctx.Process(target=producer, args=(there, here))
        p.start()
        there.close()
        for _ in range(2):
            tput_batch(here, count, size)  # warm-up
        s = [tput_batch(here, count, size) for _ in range(reps)]
        here.close()
        p.join()
        emit(f"tput.{label}", "python", "B/s",
             "child send_bytes -> parent recv_bytes, fork child, after 2 warm-up batches", s)
    # Cold: the first batch of a fresh interpreter and a fresh child.
    cold = []
    for _ in range(n(8, quick)):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--cold",
                              str(1 << 20), "16"], check=True, capture_output=True, text=True)
        cold.append(float(out.stdout.strip()))
    emit("tput.1MiB.cold", "python", "B/s",
         "first 16 x 1 MiB batch in a fresh interpreter with a fresh fork child", cold)


def cold_once(size, count):
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    p = ctx.Process(target=producer, args=(there, here))
    p.start()
    there.close()
    rate = tput_batch(here, count, size)
    here.close()
    p.join()
    print(rate)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--cold":
        cold_once(int(sys.argv[2]), int(sys.argv[3]))
        return
    global TAG
    TAG = sys.argv[sys.argv.index("--tag") + 1] if "--tag" in sys.argv else ""
    quick = "--quick" in sys.argv
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    if "start_join".startswith(only):
        start_join(quick)
    if "rtt".startswith(only):
        rtt(quick)
    if "tput".startswith(only):
        throughput(quick)


if __name__ == "__main__":
    main()
