"""Initializers that type.__call__ runs from C: loops and calls inside __init__, a dataclass's
generated __init__ with __post_init__, super().__init__, an __init__ that builds other objects,
one called inside an expression, one that raises into the caller's except, and a metaclass."""

from dataclasses import dataclass, field


class Grid:
    def __init__(self, n, fill=0):
        self.n = n
        self.rows = []
        for i in range(n):
            row = [fill + i * j for j in range(n)]
            self.rows.append(row)
        self.total = self.sum()

    def sum(self):
        s = 0
        for row in self.rows:
            s += sum(row)
        return s


class Labelled(Grid):
    def __init__(self, n, label):
        super().__init__(n, fill=1)
        self.label = label.upper()
        self.inner = Grid(2)


@dataclass
class Point:
    x: int
    y: int
    tags: list = field(default_factory=list)

    def __post_init__(self):
        for k in range(2):
            self.tags.append(self.x * k + self.y)


class Strict:
    def __init__(self, value):
        if value < 0:
            raise ValueError(f"negative: {value}")
        self.value = value


class Registry(type):
    def __init__(cls, name, bases, ns):
        super().__init__(name, bases, ns)
        cls.tag = name.lower()


g = Grid(3)
print("grid", g.total, g.rows[-1])
lab = Labelled(3, "ab")
print("labelled", lab.total, lab.label, lab.inner.total)
points = []
for i in range(3):
    points.append(Point(i, i + 1))
print("points", [(p.x, p.y, p.tags) for p in points])
for v in (2, -1, 3):
    try:
        s = Strict(v)
        print("strict", s.value)
    except ValueError as exc:
        print("refused", exc)


class Made(metaclass=Registry):
    pass


print("registry", Made.tag, len(points) + g.n)
