"""A generator pipeline with closures and an except handler inside a loop; writes results.csv."""

import random
import time

random.seed(5)


def source(n):
    for i in range(n):
        time.sleep(0.003)
        yield random.random() * i


def scaled(items, factor):
    for x in items:
        yield x * factor


def make_filter(limit):
    seen = [0]

    def keep(x):
        seen[0] += 1
        return x < limit
    return keep, seen


keep, seen = make_filter(150.0)
with open("results.csv", "w") as out:
    for i, value in enumerate(scaled(source(300), 1.5)):
        try:
            if not keep(value):
                raise ValueError(value)
            out.write(f"{i},{value:.6f}\n")
        except ValueError:
            time.sleep(0.002)
            out.write(f"{i},dropped\n")
print("seen", seen[0])
