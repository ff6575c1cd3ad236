# From pyperformance 1.14.0 (https://github.com/python/pyperformance),
# benchmarks/bm_float/run_benchmark.py. MIT license: Copyright (c) the pyperformance authors
# and the authors named below; see https://github.com/python/pyperformance/blob/main/COPYING.
# Adapted for relive's resume corpus (bench/resume_fidelity.py): pyperf removed; benchmark(POINTS) runs 36 rounds, printing the maximized point every 3.
# Each round prints a progress line; the last line is a result that depends on every round.
# Everything else is the benchmark's code as it is upstream.

"""
Artificial, floating point-heavy benchmark originally used by Factor.
"""

from math import sin, cos, sqrt


POINTS = 100000


class Point(object):
    __slots__ = ('x', 'y', 'z')

    def __init__(self, i):
        self.x = x = sin(i)
        self.y = cos(i) * 3
        self.z = (x * x) / 2

    def __repr__(self):
        return "<Point: x=%s, y=%s, z=%s>" % (self.x, self.y, self.z)

    def normalize(self):
        x = self.x
        y = self.y
        z = self.z
        norm = sqrt(x * x + y * y + z * z)
        self.x /= norm
        self.y /= norm
        self.z /= norm

    def maximize(self, other):
        self.x = self.x if self.x > other.x else other.x
        self.y = self.y if self.y > other.y else other.y
        self.z = self.z if self.z > other.z else other.z
        return self


def maximize(points):
    next = points[0]
    for p in points[1:]:
        next = next.maximize(p)
    return next


def benchmark(n):
    points = [None] * n
    for i in range(n):
        points[i] = Point(i)
    for p in points:
        p.normalize()
    return maximize(points)


if __name__ == "__main__":
    for round_ in range(36):
        p = benchmark(POINTS)
        if round_ % 3 == 2:
            print(f"round {round_}: {p!r}")
    print("final", repr(p))
