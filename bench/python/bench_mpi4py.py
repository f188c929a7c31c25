"""The scale-out benchmark's mpi4py side: mpi4py.futures' MPIPoolExecutor on the world's
ranks, measured as crates/mp-mpi/examples/mpi_bench.rs measures mp's MPI pool.

Run as:  mpirun -n N python3 -m mpi4py.futures bench_mpi4py.py [--quick]
Prints one `RESULT <metric> <value>` line per measurement (see mpi_bench.rs).
"""

import sys
import time

from mpi4py.futures import MPIPoolExecutor

SPIN_MS = 20


def trivial(x):
    return x


def spin(ms):
    end = time.perf_counter() + ms / 1000.0
    n = 0
    while time.perf_counter() < end:
        n += 1
    return ms


def main():
    quick = "--quick" in sys.argv
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        print(f"RESULT workers {workers}", flush=True)
        list(ex.map(trivial, range(1000), chunksize=100))

        n = 100_000
        chunk = -(-n // (4 * workers))
        t = time.perf_counter()
        v = list(ex.map(trivial, range(n), chunksize=chunk))
        assert len(v) == n
        print(f"RESULT map_s {time.perf_counter() - t:.4f}", flush=True)

        n1 = 2_000 if quick else 5_000
        t = time.perf_counter()
        v = list(ex.map(trivial, range(n1)))
        assert len(v) == n1
        print(f"RESULT chunk1_per_s {n1 / (time.perf_counter() - t):.0f}", flush=True)

        tasks = 8 * workers
        t = time.perf_counter()
        done = list(ex.map(spin, [SPIN_MS] * tasks))
        assert len(done) == tasks
        speedup = tasks * SPIN_MS / 1000.0 / (time.perf_counter() - t)
        print(f"RESULT speedup {speedup:.3f}", flush=True)

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
