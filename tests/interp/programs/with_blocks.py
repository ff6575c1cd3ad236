"""with blocks: files, a class context manager, contextlib; exceptions through them."""

import contextlib

class Tag:
    def __init__(self, name):
        self.name = name
    def __enter__(self):
        print("enter", self.name)
        return self
    def __exit__(self, kind, value, tb):
        print("exit", self.name, kind.__name__ if kind else None)
        return kind is KeyError

@contextlib.contextmanager
def section(title):
    print("begin", title)
    try:
        yield title.upper()
    finally:
        print("end", title)

def work(n):
    with open("log.txt", "a") as log, Tag(f"t{n}") as t:
        log.write(f"start {n}\n")
        with section(f"s{n}") as s:
            log.write(f"{s}\n")
            if n == 1:
                raise KeyError(n)
        log.write(f"done {n}\n")
    try:
        with open("log.txt") as fh:
            first = fh.readline()
            raise ValueError(first.strip())
    except ValueError as e:
        print("value error", e)
    return n * 2

open("log.txt", "w").close()
for i in range(3):
    print("work", work(i))
print(open("log.txt").read())
