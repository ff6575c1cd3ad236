# From pyperformance 1.14.0 (https://github.com/python/pyperformance),
# benchmarks/bm_fannkuch/run_benchmark.py. MIT license: Copyright (c) the pyperformance authors
# and the authors named below; see https://github.com/python/pyperformance/blob/main/COPYING.
# Adapted for relive's resume corpus (bench/resume_fidelity.py): pyperf removed; fannkuch(n) runs for n = 7, 8, 9, 9, 9 (upstream 9), printing the maximum flips.
# Each round prints a progress line; the last line is a result that depends on every round.
# Everything else is the benchmark's code as it is upstream.

"""
The Computer Language Benchmarks Game
http://benchmarksgame.alioth.debian.org/

Contributed by Sokolov Yura, modified by Tupteq.
"""



DEFAULT_ARG = 9


def fannkuch(n):
    count = list(range(1, n + 1))
    max_flips = 0
    m = n - 1
    r = n
    perm1 = list(range(n))
    perm = list(range(n))
    perm1_ins = perm1.insert
    perm1_pop = perm1.pop

    while 1:
        while r != 1:
            count[r - 1] = r
            r -= 1

        if perm1[0] != 0 and perm1[m] != m:
            perm = perm1[:]
            flips_count = 0
            k = perm[0]
            while k:
                perm[:k + 1] = perm[k::-1]
                flips_count += 1
                k = perm[0]

            if flips_count > max_flips:
                max_flips = flips_count

        while r != n:
            perm1_ins(r, perm1_pop(0))
            count[r] -= 1
            if count[r] > 0:
                break
            r += 1
        else:
            return max_flips


if __name__ == "__main__":
    for n in (7, 8, 9, 9, 9):
        print(f"fannkuch({n}) = {fannkuch(n)}")
    print("final ok")
