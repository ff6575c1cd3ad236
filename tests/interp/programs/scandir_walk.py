"""Walking a directory with os.scandir(): a for loop over the iterator, a with block, entries
kept in a list, and an iterator advanced by hand."""

import os

os.makedirs("tree", exist_ok=True)
for i, name in enumerate(["delta", "alpha", "echo", "bravo", "charlie", "fox"]):
    with open(os.path.join("tree", name), "w") as f:
        f.write(name * (i + 1))


def size(entry):
    return entry.stat().st_size


total = 0
for entry in os.scandir("tree"):
    n = size(entry)
    total += n
    print(entry.name, n, entry.is_file())

kept = []
with os.scandir("tree") as it:
    for entry in it:
        if entry.name < "d":
            kept.append(entry)
        print("with", entry.name)

print(total, [e.name for e in kept], [e.path for e in kept], [size(e) for e in kept])
listing = os.scandir(b"tree")
first = next(listing)
second = next(listing)
print(first.name, second.path, [e.name for e in listing])
