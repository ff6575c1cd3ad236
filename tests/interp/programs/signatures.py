"""super(), keyword-only, positional-only and **kwargs parameters, comprehensions."""

class Base:
    def total(self, xs, *, scale=1):
        out = 0
        for x in xs:
            out += x * scale
        return out

class Child(Base):
    def total(self, xs, *extra, scale=2, **opts):
        t = super().total(xs, scale=scale)
        for e in extra:
            t += e
        helper = lambda v: v + len(opts) + (self is not None)
        return helper(t)

def posonly(a, b=3, /, c=4):
    r = a + b + c
    return r

c = Child()
print(c.total([1, 2], 5, 6, scale=3, flag=True))
print(c.total(xs=[4]))
args = ([1, 1],)
print(Child.total(c, *args, **{"scale": 5}))
print(posonly(1), posonly(1, 2, c=9))
data = {"a": 1, "b": 2}
for k, v in data.items():
    for i, ch in enumerate(k * v):
        print(k, i, ch, sorted(data)[::-1])
matrix = [[1, 2], [3, 4]]
flat = [y
        for row in matrix
        for y in row]
print(flat, {n: n * n for n in flat if n % 2})
