"""A program that exercises what a resume must restore: nested calls and loops, a module-level
loop, a method with a `with` block writing a file line by line, an active `except` handler,
closures, a suspended generator feeding a `for` loop, `random` and NumPy RNGs.
Deterministic: its output and its log file depend only on its seed."""

import random
import sys
import time

import numpy as np

random.seed(1)
rng = np.random.default_rng(2)
np.random.seed(3)
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def counter():
    count = [0]

    def bump(by):
        count[0] += by
        return count[0]
    return bump


def numbers(n):
    for i in range(n):
        yield i * i


class Trainer:
    def __init__(self, path):
        self.path = path
        self.weights = np.zeros(4)

    def epoch(self, k, bump):
        with open(self.path, "a") as log:
            for batch in numbers(3):
                for j in range(2):
                    noise = rng.normal(size=4) + np.random.rand(4)
                    self.weights += noise * 0.01 + random.random()
                    bump(batch + j)
                    time.sleep(0.004)
                log.write(f"epoch {k} batch {batch} {self.weights.sum():.6f}\n")
        try:
            if k % 4 == 3:
                raise ValueError(k)
        except ValueError as err:
            for r in range(2):  # inside an active handler
                time.sleep(0.004)
                bump(r)
            print("handled", err.args[0], flush=True)


trainer = Trainer("train.log")
open(trainer.path, "w").close()
bump = counter()
total = 0
for k in range(STEPS):  # the module-level loop
    trainer.epoch(k, bump)
    total += bump(0)
    print("step", k, total, f"{trainer.weights.sum():.6f}", random.randint(0, 10**6), flush=True)
print("done", total, f"{trainer.weights.sum():.6f}")
