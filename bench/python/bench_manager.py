"""Manager benchmarks, Python side: the same bench names as bench/src/manager.rs, "impl":"python"."""
import json
import multiprocessing as mp
import sys
import time

CLIENTS = 8
OPS_PER_CLIENT = 2000


def emit(bench, unit, note, samples):
    print(json.dumps({"bench": bench, "impl": "python", "unit": unit, "note": note,
                      "samples": samples}), flush=True)
    print(f"  {bench:<16} python   {len(samples)} samples", file=sys.stderr)


def client(d, start, me):
    start.wait()
    for i in range(OPS_PER_CLIENT):
        k = me * 1_000_000 + i
        d[k] = i
        assert d[k] == i
    start.wait()


def run(reps):
    with mp.Manager() as m:
        d = m.dict()
        for i in range(500):
            d[i] = i
            d[i]
        batch = 2000
        lat = []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(batch):
                d[i % 100] = i
                d[i % 100]
            lat.append((time.perf_counter() - t) / batch)
        emit("mgr.dict_setget", "s",
             "d[k] = v then d[k] through a manager dict proxy (local socket)", lat)

        rates = []
        for _ in range(reps):
            d = m.dict()
            start = m.Barrier(CLIENTS + 1)
            kids = [mp.Process(target=client, args=(d, start, me)) for me in range(CLIENTS)]
            for p in kids:
                p.start()
            start.wait()
            t = time.perf_counter()
            start.wait()
            took = time.perf_counter() - t
            for p in kids:
                p.join()
            rates.append(CLIENTS * OPS_PER_CLIENT * 2 / took)
        emit("mgr.clients8", "ops/s",
             "8 client processes each doing 2000 set+get pairs on one manager dict", rates)


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
