# From pyperformance 1.14.0 (https://github.com/python/pyperformance),
# benchmarks/bm_generators/run_benchmark.py. MIT license: Copyright (c) the pyperformance authors
# and the authors named below; see https://github.com/python/pyperformance/blob/main/COPYING.
# Adapted for relive's resume corpus (bench/resume_fidelity.py): pyperf removed; the tree of range(100000) is walked 30 times, printing each walk's sum.
# Each round prints a progress line; the last line is a result that depends on every round.
# Everything else is the benchmark's code as it is upstream.

"""
Benchmark recursive generators implemented in python
by traversing a binary tree.

Author: Kumar Aditya
"""

from __future__ import annotations
import time

from collections.abc import Iterator



class Tree:
    def __init__(self, left: Tree | None, value: int, right: Tree | None) -> None:
        self.left = left
        self.value = value
        self.right = right

    def __iter__(self) -> Iterator[int]:
        if self.left:
            yield from self.left
        yield self.value
        if self.right:
            yield from self.right


def tree(input: range) -> Tree | None:
    n = len(input)
    if n == 0:
        return None
    i = n // 2
    return Tree(tree(input[:i]), input[i], tree(input[i + 1:]))

def bench_generators(loops: int) -> float:
    assert list(tree(range(10))) == list(range(10))
    range_it = range(loops)
    iterable = tree(range(100000))
    t0 = time.perf_counter()
    for _ in range_it:
        for _ in iterable:
            pass
    return time.perf_counter() - t0


if __name__ == "__main__":
    assert list(tree(range(10))) == list(range(10))
    iterable = tree(range(100000))
    for round_ in range(30):
        total = 0
        for value in iterable:
            total += value
        print(f"walk {round_}: sum {total}")
    print("final", total)
