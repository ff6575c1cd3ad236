"""A resume never goes on with a value missing or different: a snapshot that lacks a variable
the code reads is not resumable (and says which), common C objects are stored, and files the
program reads are reopened where it stood, also when a forked child wrote the snapshot."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Workdir


def _checkpoints(work: Workdir) -> list[dict[str, Any]]:
    return [entry for entry in work.log() if entry["trigger"] == "explicit"]


def _resumes_like_python(work: Workdir, script: str, *run_args: str) -> list[dict[str, Any]]:
    """Runs ``script`` plainly and under ``relive run``, resumes every resumable snapshot and
    checks each resumed run prints the end of what the plain run printed. Returns the log."""
    plain = work.python(script)
    assert plain.returncode == 0, plain.stderr
    captured = work.relive("run", *run_args, script, check=True)
    assert captured.stdout == plain.stdout
    log = work.log()
    for entry in log:
        if entry["resumable"]:
            resumed = work.relive("resume", entry["id"], "--every", "0")
            assert resumed.returncode == 0, f"{entry['function']}:{entry['line']}: {resumed.stderr}"
            assert resumed.stdout.strip(), "the resumed run printed nothing"
            assert plain.stdout.endswith(resumed.stdout), \
                f"resumed from {entry['function']}:{entry['line']}:\n{resumed.stdout}\nplain:\n{plain.stdout}"
    return log


MISSING_GLOBAL = """\
import threading
import relive

lock = threading.Lock()      # cannot be stored, and step() reads it
unused = threading.Lock()    # cannot be stored, and no code reads it

def step(i):
    with lock:
        return i * 2

total = 0
for i in range(4):
    total += step(i)
    if i == 1:
        relive.checkpoint()
print(total)
"""


def test_a_global_the_code_reads_and_the_snapshot_lacks_makes_it_not_resumable(work):
    work.write("prog.py", MISSING_GLOBAL)
    work.relive("run", "prog.py", check=True)
    [point] = _checkpoints(work)
    assert not point["resumable"]
    reasons = " ".join(point["not_resumable_because"])
    assert "'lock'" in reasons and "cannot pickle" in reasons, reasons
    assert "unused" not in reasons, reasons
    refused = work.relive("resume", point["id"])
    assert refused.returncode != 0 and "'lock'" in refused.stderr


UNREAD_GLOBAL = """\
import threading
import relive

unused = threading.Lock()    # cannot be stored, and no code reads it

total = 0
for i in range(4):
    total += i * 2
    if i == 1:
        relive.checkpoint()
    print(i, total)
"""


def test_a_global_no_code_reads_does_not_stop_a_resume(work):
    work.write("prog.py", UNREAD_GLOBAL)
    log = _resumes_like_python(work, "prog.py")
    [point] = [entry for entry in log if entry["trigger"] == "explicit"]
    assert point["resumable"], point["not_resumable_because"]


STRUCTS = """\
import struct
import relive

int2byte = struct.Struct(">B").pack          # pyperformance's pyflate
pair = struct.Struct("<HH")

def encode(i):
    return int2byte(i * 40) + pair.pack(i, 2 * i)

out = []
for i in range(6):
    out.append(encode(i))
    if i == 2:
        relive.checkpoint()
    print(i, b"".join(out).hex(), pair.unpack_from(out[-1], 1))
"""


def test_struct_objects_and_their_bound_methods_are_stored(work):
    work.write("prog.py", STRUCTS)
    log = _resumes_like_python(work, "prog.py")
    [point] = [entry for entry in log if entry["trigger"] == "explicit"]
    assert point["resumable"], point["not_resumable_because"]
    assert not point["skipped"], point["skipped"]


READER = """\
import hashlib
import time

with open("data.bin", "wb") as f:
    f.write(hashlib.sha256(b"seed").digest() * 200000)   # 6 400 000 bytes: reads for a second or more

total = 0
with open("data.bin", "rb") as f:   # read one byte at a time, through an 8 KiB buffer
    n = 0
    while True:
        c = f.read(1)
        if not c:
            break
        total = (total * 31 + c[0]) % 1000003
        n += 1
        if n % 64000 == 0:
            time.sleep(0.02)   # two seconds of wall time however fast it reads: timer snapshots come
        if n % 800000 == 0:
            print(n, total)
print("end", n, total)
"""


def test_a_file_being_read_reopens_where_the_program_stood_when_a_forked_child_wrote_the_snapshot(work):
    # The child shares the file's offset with the program, which reads on: the position must
    # be the one at the fork, not where the program has got to by the time the child asks.
    work.write("prog.py", READER)
    log = _resumes_like_python(work, "prog.py", "--every", "0.3", "--overhead", "0", "--mode", "fork")
    assert sum(entry["resumable"] and entry["mode"] == "fork" for entry in log) >= 2


REWRITTEN = """\
import relive

for n in range(3):
    with open("out.txt", "w") as f:   # written anew each time (pyperformance's chaos: its image)
        for i in range(200):
            f.write(f"{n} {i}\\n")
            if n == 0 and i == 100:
                relive.checkpoint()
    with open("out.txt") as f:
        print(n, f.read().count(f"{n} "))
"""


REWRITTEN_CLOSED = """\
import relive

for n in range(3):
    with open("out.txt", "w") as f:
        for i in range(200):
            f.write(f"{n} {i}\\n")
    if n == 0:
        relive.checkpoint()           # out.txt closed: the program reads it next
    with open("out.txt") as f:
        print(n, f.read().count(f"{n} "))
"""


@pytest.mark.parametrize("program", [REWRITTEN, REWRITTEN_CLOSED], ids=["open", "closed"])
def test_a_file_written_over_after_the_snapshot_is_not_resumed_into(work, program):
    # The run went on past the snapshot and wrote out.txt anew, as a killed run may have:
    # what the file held at the snapshot is gone, and cutting it back to its size then would
    # resume with another round's bytes, to write on from (open) or to read (closed).
    work.write("prog.py", program)
    work.relive("run", "prog.py", check=True)
    [point] = _checkpoints(work)
    assert point["resumable"], point["not_resumable_because"]
    refused = work.relive("resume", point["id"])
    assert refused.returncode != 0, refused.stdout
    assert "out.txt" in refused.stderr and "written over" in refused.stderr, refused.stderr
    assert refused.stdout == ""


TORCH_MODES = """\
import relive
import torch

torch.manual_seed(0)
w = torch.randn(3, requires_grad=True)
with torch.no_grad():                      # as pytorch/examples' VAE draws its samples
    relive.checkpoint()
    y = w * 2
    print(y.requires_grad, y.numpy().round(3).tolist())
torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
relive.checkpoint()
print(torch.zeros(1).dtype, torch.get_num_threads(), torch.is_grad_enabled())
"""


def test_torchs_grad_mode_and_default_dtype_come_back(work):
    pytest.importorskip("torch")
    work.write("prog.py", TORCH_MODES)
    log = _resumes_like_python(work, "prog.py")
    assert sum(entry["resumable"] for entry in log) == 2


TEXT_LOOP = """\
import relive
ends = ("\\n", "\\r\\n", "\\r")
with open("data.txt", "w", encoding="utf-8", newline="") as out:   # multibyte text, every newline kind
    out.write("".join("ligne %d é€𝄞 %s%s" % (i, "x" * (i * 37 % 300), ends[i % 3]) for i in range(3000)))
seen = 0
with open("data.txt", encoding="utf-8", newline=NEWLINE) as fh:
    for line in fh:
        seen += len(line)
        if line.startswith(("ligne 20 ", "ligne 1500 ", "ligne 2998 ")):
            relive.checkpoint()
            print(repr(line[:12]), seen)
print("done", seen)
"""


def test_a_text_file_read_by_a_for_loop_resumes_where_the_loop_stood(work):
    """CPython keeps no position while a loop reads a text file: the forked snapshot child
    finds it (the unread text the file object holds, matched against the file's bytes)."""
    work.write("textloop.py", TEXT_LOOP.replace("NEWLINE", "None"))
    log = _resumes_like_python(work, "textloop.py")
    assert [e["resumable"] for e in log if e["trigger"] == "explicit"] == [True, True, True]


def test_a_text_file_read_by_a_for_loop_is_refused_where_its_position_cannot_be_found(work):
    work.write("textloop.py", TEXT_LOOP.replace("NEWLINE", "None"))
    work.relive("run", "--mode", "inline", "textloop.py", check=True)  # no forked child
    for entry in _checkpoints(work):
        assert not entry["resumable"]
        assert any("is read by a for loop (`for line in f`)" in r and "f.readline()" in r
                   for r in entry["not_resumable_because"]), entry["not_resumable_because"]


def test_a_text_file_opened_with_newline_other_than_the_default_is_refused(work):
    """A resume reopens text files with the default newlines: one opened with newline=""
    (csv's way) would read \\r\\n as \\n after it, a silent difference."""
    for name, program in (("loop.py", TEXT_LOOP), ("lines.py", TEXT_LOOP.replace(
            "    for line in fh:\n", "    for line in iter(fh.readline, ''):\n"))):
        work.write(name, program.replace("NEWLINE", '""'))
        work.relive("run", name, check=True)
        for entry in _checkpoints(work):
            assert not entry["resumable"]
            assert any("newline= other than the default" in r for r in entry["not_resumable_because"]), \
                entry["not_resumable_because"]


COMPRESSED_INPUT = """\
import gzip, relive

with gzip.open("rows.gz", "wt") as out:
    out.write("".join(f"{i},{i * i}\\n" for i in range(20000)))
total = 0
with gzip.open("rows.gz", "rt") as rows:
    while line := rows.readline():
        a, b = map(int, line.split(","))
        total += b - a
        if a in (7000, 15000):
            relive.checkpoint()      # inside a gzip file read line by line
            print(a, total)
print("total", total)
"""


def test_a_gzip_file_read_line_by_line_resumes_where_it_stood(work: Workdir) -> None:
    work.write("compressed.py", COMPRESSED_INPUT)
    log = _resumes_like_python(work, "compressed.py", "--every", "0")
    assert sum(e["resumable"] for e in log) == 2, [e["not_resumable_because"] for e in log]
