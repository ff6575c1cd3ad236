"""An explicit checkpoint() call in the middle of a loop: resuming returns from it."""

import builtins

checkpoint = getattr(builtins, "checkpoint", lambda: None)


def work(n):
    total = 0
    for i in range(n):
        total += i
        if i == 2:
            checkpoint()
        print(i, total)
    return total


print(work(5))
