"""A loop at module level, an iterator advanced by hand, random."""

import random

random.seed(3)
squares = []
acc = 0
for i in range(6):
    r = random.randint(1, 9)
    acc += i * r
    if i % 2:
        squares.append(acc)
    else:
        squares.insert(0, -acc)
    print(i, r, acc)
it = iter(squares)
for s in it:
    print("s", s, next(it, None))
print(sorted(squares), random.random())
