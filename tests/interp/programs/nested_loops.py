"""Nested function calls inside nested loops, called from a module-level loop."""

def add(a, b):
    s = a + b
    return s

def inner(n):
    total = 0
    for i in range(n):
        for j in [1, 2]:
            total = add(total, i * j)
    return total

for k in range(3):
    print(k, inner(k + 1))
print("done")
