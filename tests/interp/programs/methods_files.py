"""Methods, keyword and *args calls, a with-open block writing a file, random."""

import random

class Writer:
    def __init__(self, path):
        self.path = path
        self.count = 0

    def write_lines(self, items, *, prefix=">"):
        with open(self.path, "w") as out:
            for i, item in enumerate(items):
                line = f"{prefix} {i} {item}"
                out.write(line + "\n")
                self.count += 1
        return self.count

def pick(rng, n):
    return [rng.randint(0, 100) for _ in range(n)]

random.seed(7)
w = Writer("out.txt")
vals = pick(random, 3)
print("vals", vals)
n = w.write_lines(vals, prefix="#")
print("wrote", n, random.random())
args = (["a", "b"],)
n = w.write_lines(*args, prefix="*")
print("again", n, open("out.txt").read())
