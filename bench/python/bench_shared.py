"""Python counterpart of crates/mp-core/examples/bench_shared.rs: the same JSON lines for
multiprocessing.shared_memory bandwidth (64 MiB, against an in-process copy) and two
processes incrementing Value('q', lock=True)."""
import json
import multiprocessing as mp
import time
from multiprocessing import shared_memory

SIZE = 64 << 20
ROUNDS = 15
INCREMENTS = 1_000_000


def report(name, unit, samples):
    s = sorted(samples)
    at = lambda q: s[round((len(s) - 1) * q)]
    print(json.dumps({"name": name, "unit": unit, "median": round(at(0.5), 3),
                      "p10": round(at(0.1), 3), "p90": round(at(0.9), 3)}), flush=True)


def gbps(f):
    f()
    out = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        f()
        out.append(SIZE / (time.perf_counter() - t) / 1e9)
    return out


def increment(v):
    for _ in range(INCREMENTS):
        with v.get_lock():
            v.value += 1


def main():
    src = bytearray(b"\x5a" * SIZE)
    dst = bytearray(SIZE)

    def memcpy():
        dst[:] = src
    report("memcpy_64MiB", "GB/s", gbps(memcpy))

    shm = shared_memory.SharedMemory(create=True, size=SIZE)
    buf = shm.buf

    def write():
        buf[:] = src

    def read():
        dst[:] = buf
    report("shm_write_64MiB", "GB/s", gbps(write))
    report("shm_read_64MiB", "GB/s", gbps(read))
    del buf
    shm.close()
    shm.unlink()

    rates = []
    for _ in range(3):
        v = mp.Value("q", 0, lock=True)
        t = time.perf_counter()
        ps = [mp.Process(target=increment, args=(v,)) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        secs = time.perf_counter() - t
        assert v.value == 2 * INCREMENTS, "lost increments"
        rates.append(2 * INCREMENTS / secs)
    report("value_lock_increment_2proc", "ops/s", rates)


if __name__ == "__main__":
    main()
