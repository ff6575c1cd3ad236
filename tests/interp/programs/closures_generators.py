"""Closures sharing cells, suspended generators feeding for loops, iterators of builtins."""

def make_counter(start):
    count = start
    def bump(by=1):
        nonlocal count
        count += by
        return count
    def peek():
        return count
    for i in range(3):
        bump(i)
        print("bumped", peek())
    return bump, peek

def squares(n):
    for i in range(n):
        try:
            yield i * i
        finally:
            print("after yield", i)

def pairs(items):
    idx = 0
    for item in items:
        yield idx, item
        idx += 1

bump, peek = make_counter(10)
total = 0
for sq in squares(4):
    bump()
    total += sq
    print("sq", sq, peek())
g = squares(3)
not_started = pairs("xyz")
for k, v in not_started:
    print(k, v, next(g))
print("total", total, peek(), list(g))
gen_expr = (c.upper() for c in "abc")
for up in gen_expr:
    print(up)
z = list(zip([1, 2, 3], "abc"))
for a, (b, c) in enumerate(zip(z, reversed(z))):
    print(a, b, c)
