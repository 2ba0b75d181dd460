#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_frame_assembler (native/fuzz/corpus/frame_assembler).

Each seed is a 14-byte configuration header followed by the byte stream (see
the comment at the top of fuzz_frame_assembler.cc). Re-run after changing the
header layout: python3 native/fuzz/make_corpus.py

Bytes 12-13 (descriptors) were added with issue 19; the seeds written before
are the same inputs with two zero bytes there (no descriptors).
"""
import os
import random

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "frame_assembler")
SLAB = [16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 262144, 524288]
CHUNK_TABLE, ONE_BYTE, ALL_AT_ONCE, RANDOM = 0, 1, 2, 3
POOL, POOL_MISMATCH, KEEP_ALL, LAZY_DRAIN, EAGAIN, SCRIBBLE = 4, 8, 16, 32, 64, 128
BUDGETS = 254  # header byte 1 (min_read): slab-sized reads, random budgets on commit()/resume()
# Header byte 12: which reads carry descriptors, and how many.
FD_RANDOM, FD_MASK, FD_EVERY = 1, 2, 3  # PRNG with probability (byte 13 + 1)/256; read k iff bit k%8 of byte 13; every read
FD_ALIGN, FD_STRICT = 4, 8  # reads carrying some end with their last frame; none where no frame starts
FD_1, FD_2, FD_4, FD_1_TO_4 = 0, 16, 32, 48
REALISTIC = FD_ALIGN | FD_STRICT  # what a sender following the wire rule produces


def uvarint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def frames(msgs):
    return b"".join(uvarint(len(m)) + m for m in msgs)


def header(slab_idx, min_read, thresh, lim_a, lim_b, flags, table=(0, 0, 0, 0, 0, 0), fds=0, fd_param=0):
    return bytes([slab_idx, min_read, thresh, lim_a, lim_b, flags, *table, fds, fd_param])


def payload(n, seed):
    r = random.Random(seed)
    return bytes(r.randrange(256) for _ in range(n))


seeds = {}
# Mixed valid frames, chunked by a table, pooled slabs, scribbled spans.
mixed = [b"", b"a", payload(5, 1), payload(127, 2), payload(128, 3), payload(300, 4), b"", payload(1000, 5),
         b"xy", payload(16383, 6)[:200], payload(2000, 7)]
seeds["mixed-pool-table"] = header(7, 63, 50, 6, 16, CHUNK_TABLE | POOL | SCRIBBLE, (1, 7, 200, 0, 3, 50)) + frames(mixed)
seeds["mixed-random-keep"] = header(9, 127, 100, 2, 20, RANDOM | KEEP_ALL | LAZY_DRAIN | EAGAIN, (9, 8, 7, 6, 5, 4)) + frames(mixed)
seeds["mixed-all-at-once"] = header(12, 0, 0, 4, 0, ALL_AT_ONCE | POOL | POOL_MISMATCH) + frames(mixed)
# Zero-length frames, one byte per read, tiny slabs.
seeds["zero-length-one-byte"] = header(0, 10, 10, 0, 0, ONE_BYTE | KEEP_ALL) + frames([b""] * 200)
seeds["zero-length-limit0"] = header(1, 0, 254, 5, 0, CHUNK_TABLE, (3, 1, 2, 0, 5, 7)) + frames([b""] * 50) + uvarint(1) + b"!"
# Overlong (non-minimal) prefixes are valid, as in Go.
overlong = bytes([0x85, 0x80, 0x80, 0x00]) + b"hello" + bytes([0x80] * 9 + [0x00]) + bytes([0x83, 0x00]) + b"abc"
seeds["overlong-prefixes"] = header(3, 100, 200, 7, 7, ONE_BYTE | SCRIBBLE) + overlong
seeds["overlong-prefixes-table"] = header(8, 30, 30, 1, 4, CHUNK_TABLE | POOL, (2, 3, 1, 11, 0, 4)) + overlong * 3
# Overflow prefixes: a 10th byte above 1, or with the continuation bit.
seeds["overflow-10th-byte-2"] = header(7, 50, 50, 4, 0, ONE_BYTE) + frames([b"ok"]) + bytes([0x80] * 9 + [0x02])
seeds["overflow-10th-byte-continues"] = header(7, 50, 50, 4, 0, ALL_AT_ONCE) + frames([b"ok", b""]) + bytes([0x80] * 10) + b"tail"
seeds["huge-prefix-too-large"] = header(2, 0, 0, 2, 24, RANDOM) + bytes([0xFF] * 9 + [0x01]) + b"x"
# A length above the limit, decided from an incomplete prefix.
seeds["too-large-1024"] = header(8, 64, 64, 7, 7, CHUNK_TABLE, (1, 1, 1, 1, 1, 1)) + frames([payload(1023, 8), b"z"]) + uvarint(1024) + b"..."
seeds["too-large-edge-16384"] = header(10, 20, 20, 7, 2, ONE_BYTE) + frames([b"q" * 16383]) + uvarint(16384)
seeds["limit-edge-127-128"] = header(9, 10, 10, 7, 0, CHUNK_TABLE, (1, 2, 3, 0, 0, 0)) + frames([b"m" * 127]) + uvarint(128) + b"m" * 128
# A large frame gets its own buffer; small frames around it.
large = frames([b"s1", payload(3000, 9), b"s2", payload(700, 10), b""])
seeds["large-frame-small-slab"] = header(8, 100, 20, 2, 14, RANDOM | POOL | KEEP_ALL | SCRIBBLE, (1, 2, 3, 4, 5, 6)) + large
seeds["large-frame-one-byte"] = header(6, 0, 254, 2, 13, ONE_BYTE | EAGAIN) + large
seeds["large-frame-truncated"] = header(7, 60, 30, 2, 14, CHUNK_TABLE, (200, 130, 0, 9, 9, 9)) + large[:-500]
# Partial frame at the end (a clean stream cut in the middle of a payload).
seeds["truncated-payload"] = header(11, 200, 200, 6, 1, ALL_AT_ONCE) + frames([b"abc"]) + uvarint(100) + b"only part"
# Budgets (issue 16): cutting stops at a random budget and resumes; floods of
# empty frames, large frames, and an error found only when the backlog resumes.
seeds["budget-zero-length-flood"] = header(9, BUDGETS, 100, 4, 0, ALL_AT_ONCE | POOL) + frames([b""] * 5000)
seeds["budget-mixed-random-keep"] = header(12, BUDGETS, 100, 2, 20, RANDOM | KEEP_ALL | EAGAIN, (3, 1, 4, 1, 5, 9)) + frames(mixed * 3)
seeds["budget-large-frames"] = header(8, BUDGETS, 20, 2, 14, RANDOM | SCRIBBLE, (2, 7, 1, 8, 2, 8)) + large
seeds["budget-error-in-backlog"] = header(7, BUDGETS, 50, 4, 0, ALL_AT_ONCE) + frames([b""] * 300 + [b"x"] * 50) + bytes([0x80] * 9 + [0x02])
seeds["budget-too-large-in-backlog"] = header(8, BUDGETS, 64, 7, 7, ALL_AT_ONCE) + frames([b"y"] * 400) + uvarint(1024) + b"..."
# Descriptors (issue 19). Valid: a read carrying descriptors ends with the
# frame that starts in it (or with the first part of it, the rest following).
seeds["fds-realistic-mixed"] = header(9, 127, 100, 2, 20, CHUNK_TABLE | POOL, (1, 7, 200, 0, 3, 50), FD_EVERY | REALISTIC | FD_2) + frames(mixed)
seeds["fds-realistic-random-budget"] = header(8, BUDGETS, 100, 2, 20, RANDOM | KEEP_ALL | POOL, (3, 1, 4, 1, 5, 9), FD_RANDOM | REALISTIC | FD_1_TO_4, 100) + frames(mixed * 2)
seeds["fds-large-frame-own-buffer"] = header(8, 100, 20, 2, 14, RANDOM | KEEP_ALL | SCRIBBLE, (1, 2, 3, 4, 5, 6), FD_EVERY | REALISTIC | FD_4) + large
# Two sends merged into one read: the descriptors go to the last frame starting in it.
seeds["fds-two-frames-one-read"] = header(11, 200, 200, 6, 1, ALL_AT_ONCE, fds=FD_EVERY | FD_2) + frames([b"first", b"second"])
# One-byte frames: every read holds frame starts, so any read may carry descriptors.
seeds["fds-budget-zero-length-flood"] = header(9, BUDGETS, 100, 4, 0, RANDOM | LAZY_DRAIN, (2, 7, 1, 8, 2, 8), FD_EVERY | FD_1_TO_4) + frames([b""] * 2000)
# A partial frame at the end keeps its descriptors until the assembler goes.
seeds["fds-trailing-partial-frame"] = header(11, 200, 200, 6, 1, CHUNK_TABLE, (0, 4, 4, 4, 4, 4), FD_MASK | FD_2, 0b00000110) + frames([b"abc"]) + uvarint(100) + b"only part"
# Invalid: descriptors on a read in the middle of a frame (one byte per read,
# the second read carries them), found when the frame is whole.
seeds["fds-mid-frame"] = header(11, 200, 200, 6, 1, ONE_BYTE, fds=FD_MASK | FD_1, fd_param=0b00000100) + frames([b"hello", b"x"])
# ... in the middle of a frame with its own buffer: found at once.
seeds["fds-mid-large-frame"] = header(8, 100, 20, 2, 14, CHUNK_TABLE, (40, 40, 40, 40, 40, 40), FD_MASK | FD_1, 0b00010000) + large
# ... while the descriptors of the read where that frame starts still wait for it.
seeds["fds-two-waiting"] = header(11, 200, 200, 6, 1, CHUNK_TABLE, (3, 3, 3, 3, 3, 3), FD_MASK | FD_2, 0b00000110) + frames([b"0123456789"])
# Descriptors on the read that brings a bad prefix: the framing error wins.
seeds["fds-then-too-large"] = header(7, 50, 50, 4, 0, ALL_AT_ONCE, fds=FD_EVERY | FD_1) + frames([b"ok"]) + bytes([0x80] * 9 + [0x02])
seeds["fds-waiting-then-bad-prefix"] = header(7, 50, 50, 4, 0, ONE_BYTE, fds=FD_MASK | FD_1, fd_param=0b00100000) + frames([b"ok"]) + bytes([0x80] * 9 + [0x02])

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
