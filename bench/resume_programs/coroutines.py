# From pyperformance 1.14.0 (https://github.com/python/pyperformance),
# benchmarks/bm_coroutines/run_benchmark.py. MIT license: Copyright (c) the pyperformance authors
# and the authors named below; see https://github.com/python/pyperformance/blob/main/COPYING.
# Adapted for relive's resume corpus (bench/resume_fidelity.py): pyperf removed; fibonacci(n) is driven by send(None) for n = 20, 25, 27, 28, 29, 30, 30 (upstream 25), printing each result.
# Each round prints a progress line; the last line is a result that depends on every round.
# Everything else is the benchmark's code as it is upstream.

"""

import time
Benchmark for recursive coroutines.

Author: Kumar Aditya
"""



async def fibonacci(n: int) -> int:
    if n <= 1:
        return n
    return await fibonacci(n - 1) + await fibonacci(n - 2)


def bench_coroutines(loops: int) -> float:
    range_it = range(loops)
    t0 = time.perf_counter()
    for _ in range_it:
        coro = fibonacci(25)
        try:
            while True:
                coro.send(None)
        except StopIteration:
            pass
    return time.perf_counter() - t0


if __name__ == "__main__":
    for n in (20, 25, 27, 28, 29, 30, 30):
        coro = fibonacci(n)
        try:
            while True:
                coro.send(None)
        except StopIteration as stop:
            result = stop.value
        print(f"fibonacci({n}) = {result}")
    print("final", result)
