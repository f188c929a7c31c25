"""The scale-out benchmark's mpi4py side: mpi4py.futures' MPIPoolExecutor on the world's
ranks, measured as crates/mp-mpi/examples/mpi_bench.rs measures mp's MPI pool.

Run as:  mpirun -n N python3 -m mpi4py.futures bench_mpi4py.py [--quick]
Prints one `RESULT <metric> <value>` line per measurement (see mpi_bench.rs).
"""

import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor

TASK_S = 0.020


def trivial(x):
    return x


def work(n):
    """A fixed amount of arithmetic: n steps of a linear congruential generator."""
    x = 0
    for i in range(n):
        x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x


def calibrate():
    """Steps of work() that take about TASK_S here, and the time of one such task."""
    n = 1000
    while True:
        t = time.perf_counter()
        work(n)
        e = time.perf_counter() - t
        if e >= 0.002:
            n = int(n * TASK_S / e)
            break
        n *= 4
    times = []
    for _ in range(5):
        t = time.perf_counter()
        work(n)
        times.append(time.perf_counter() - t)
    return n, statistics.median(times)


def main():
    quick = "--quick" in sys.argv
    runs = 3 if quick else 5
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        print(f"RESULT workers {workers}", flush=True)
        list(ex.map(trivial, range(1000), chunksize=100))

        n = 100_000
        chunk = -(-n // (4 * workers))
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            v = list(ex.map(trivial, range(n), chunksize=chunk))
            times.append(time.perf_counter() - t)
            assert len(v) == n
        print(f"RESULT map_s {statistics.median(times):.4f}", flush=True)

        n1 = 2_000 if quick else 5_000
        t = time.perf_counter()
        v = list(ex.map(trivial, range(n1)))
        assert len(v) == n1
        print(f"RESULT chunk1_per_s {n1 / (time.perf_counter() - t):.0f}", flush=True)

        steps, one = calibrate()
        print(f"RESULT task_ms {one * 1e3:.2f}", flush=True)
        tasks = 8 * workers
        speedups = []
        for _ in range(runs):
            t = time.perf_counter()
            done = list(ex.map(work, [steps] * tasks))
            assert len(done) == tasks
            speedups.append(tasks * one / (time.perf_counter() - t))
        print(f"RESULT speedup {statistics.median(speedups):.3f}", flush=True)

        trips = 200 if quick else 1000
        for i in range(50):
            ex.submit(trivial, i).result()
        t = time.perf_counter()
        for i in range(trips):
            ex.submit(trivial, i).result()
        rt = (time.perf_counter() - t) * 1e6 / trips
        print(f"RESULT roundtrip_us {rt:.1f}", flush=True)


if __name__ == "__main__":
    main()
