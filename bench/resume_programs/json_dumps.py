# From pyperformance 1.14.0 (https://github.com/python/pyperformance),
# benchmarks/bm_json_dumps/run_benchmark.py. MIT license: Copyright (c) the pyperformance authors
# and the authors named below; see https://github.com/python/pyperformance/blob/main/COPYING.
# Adapted for relive's resume corpus (bench/resume_fidelity.py): pyperf removed; bench_json_dumps over all cases runs 100 rounds; each round also hashes one dump of each case.
# Each round prints a progress line; the last line is a result that depends on every round.
# Everything else is the benchmark's code as it is upstream.

import json
import sys



EMPTY = ({}, 2000)
SIMPLE_DATA = {'key1': 0, 'key2': True, 'key3': 'value', 'key4': 'foo',
               'key5': 'string'}
SIMPLE = (SIMPLE_DATA, 1000)
NESTED_DATA = {'key1': 0, 'key2': SIMPLE[0], 'key3': 'value', 'key4': SIMPLE[0],
               'key5': SIMPLE[0], 'key': '\u0105\u0107\u017c'}
NESTED = (NESTED_DATA, 1000)
HUGE = ([NESTED[0]] * 1000, 1)

CASES = ['EMPTY', 'SIMPLE', 'NESTED', 'HUGE']


def bench_json_dumps(data):
    for obj, count_it in data:
        for _ in count_it:
            json.dumps(obj)


if __name__ == "__main__":
    import hashlib
    data = []
    for case in CASES:
        obj, count = globals()[case]
        data.append((obj, range(count)))
    digest = hashlib.md5()
    for round_ in range(100):
        bench_json_dumps(data)
        for obj, _ in data:
            digest.update(json.dumps(obj).encode())
        if round_ % 10 == 9:
            print(f"round {round_}: {digest.hexdigest()}")
    print("final", digest.hexdigest())
