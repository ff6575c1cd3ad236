"""Callbacks called by C (map, sorted(key=...)): not resumable inside them."""

def double(x):
    y = x * 2
    return y

def key(word):
    k = -len(word)
    return k

words = ["a", "ccc", "bb"]
doubled = list(map(lambda w: double(w), words))
print(doubled)
ordered = sorted(words, key=key)
print(ordered)
for w in ordered:
    print(w, double(len(w)))

import weakref


class Bag(list):  # list's methods are C: a bag is released by CALL after clear() returned
    pass


def gone(n):
    note = f"released {n}"  # runs while the interpreter drops the finished call's operands
    seen.append(note)


# Registers a finalizer and hands the bag on, in one line: no resumable point lies between
# the registration (which a resumed program would not have) and the finalizer's run.
tag = lambda bag, n: (weakref.finalize(bag, gone, n), bag)[1]  # noqa: E731
seen = []
for n in range(2):
    tag(Bag([1, 2]), n).clear()
print(seen)
