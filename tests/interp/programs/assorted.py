"""Assorted constructs for the stack-depth check only: match, async, lambdas, comprehensions, recursion."""

import random, os
class Acc:
    def __init__(self):
        self.total = 0
    def add(self, *vals, scale=1):
        for v in vals:
            self.total += v * scale
        return self.total
def inner(n, acc):
    out = []
    for i in range(n):
        for j, c in enumerate("ab"):
            out.append((i, j, c))
            acc.add(i, j, scale=2)
    return out
def gen(n):
    for k in range(n):
        try:
            yield k * 2
        finally:
            pass
def handlers(x):
    try:
        raise ValueError(x)
    except ValueError as e:
        try:
            1 / 0
        except ZeroDivisionError:
            print("zde", x,
                  e)
    with open(os.devnull, "w") as fh:
        fh.write("x")
        try:
            with open(os.devnull) as g:
                pass
        except OSError:
            pass
acc = Acc()
for m in range(3):
    r = inner(m, acc)
    print(m, len(r), acc.total, [x for x in gen(3)], {k: v for k, v in zip("ab", r)})
    handlers(m)
    for z in gen(2):
        print(z, random.random() < 2)
print(sum(x * 2 for x in range(10)), (lambda q: q + 1)(3))
async def co(): return 1
import asyncio
print(asyncio.run(co()))
def deep(k):
    if k:
        return deep(k - 1) + 1
    return 0
print(deep(5), sorted([3, 1, 2], key=lambda x: -x))
def dflt(a, b=2, *args, c, **kw):
    match a:
        case [x, y]: return x + y
        case {"k": v}: return v
        case _: return a if b else c
print(dflt([1, 2], c=3), dflt({"k": 5}, c=1), dflt(7, 0, c=9))
