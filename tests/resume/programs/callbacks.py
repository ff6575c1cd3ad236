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
