"""Generators running at the point: for loops over them (directly, through enumerate, map and
filter), generator expressions, `yield from` chains with return values, generators that call
functions and iterate other generators, try/finally and `with` inside them, a running
generator held by a local and by a global, and a loop broken out of (the generator closes)."""


def scale(x, k):
    y = x * k
    return y + 1


def leaves(n):
    for i in range(n):
        v = scale(i, 3)
        yield v


def branch(n):
    got = yield from leaves(n)
    try:
        yield -1
    finally:
        print("branch done", got)
    return n * 10


def trunk(n):
    total = 0
    for size in range(1, n):
        result = yield from branch(size)
        total += result
    yield total


def pairs(items):
    it = iter(items)
    for a in it:
        b = next(it, None)
        yield a, b


def lines_of(path):
    with open(path) as fh:
        while line := fh.readline():
            yield line.strip()


def drain(it):
    out = []
    while True:
        try:
            item = next(it)
        except StopIteration:
            return out
        out.append(item)


def consume():
    seen = []
    for v in trunk(4):
        seen.append(v)
        print("trunk", v, len(seen))
    for k, (a, b) in enumerate(pairs("abcde")):
        print("pair", k, a, b)
    doubled = map(lambda p: p * 2, leaves(3))
    for d in doubled:
        print("doubled", d)
    for odd in filter(lambda x: x % 2, leaves(5)):
        print("odd", odd)
    offset = 7
    for s in (x + offset for x in leaves(3) if x > 1):
        print("genexpr", s)
    first = next(branch(2))
    print("first", first, drain(leaves(3)), len(drain(trunk(3))))
    for w in lines_of("words.txt"):
        if w == "stop":
            break
        print("word", w)
    return seen


with open("words.txt", "w") as out:
    out.write("alpha\nbeta\nstop\ngamma\n")
numbers = leaves(4)
for n in numbers:
    print("global gen", n)
print("seen", consume())
