#!/usr/bin/env python3
"""Heap bytes live at DHAT's global peak, grouped by the first frame that names a
crate of interest, divided by the number of connections held at that moment.

    dhat_by_site.py dhat.out.json CONNECTIONS

Used by bench/profile.sh for the idle memory breakdown in docs/benchmarks.md.
"""
import json
import re
import sys
from collections import defaultdict

SKIP = re.compile(
    r"(alloc::|core::|std::|hashbrown::|__rust|\bmalloc\b|\bcalloc\b|\brealloc\b|RawVec|raw_vec|"
    r"bytes::bytes_mut|bytes::bytes::|<alloc|<core|<std|\?\?\?|0x[0-9A-F]+: \?)"
)


def site(frames, ftbl):
    for index in frames:
        frame = ftbl[index]
        if SKIP.search(frame):
            continue
        # "0xADDR: function (file:line)" -> function, without generic arguments.
        name = frame.split(": ", 1)[-1]
        name = re.sub(r" \(.*\)$", "", name)
        name = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", name)))
        return name[:110]
    return "(allocator only)"


def main():
    path, connections = sys.argv[1], int(sys.argv[2])
    data = json.load(open(path))
    ftbl = data["ftbl"]
    by_site = defaultdict(lambda: [0, 0])
    total = blocks = 0
    for pp in data["pps"]:
        gb, gbk = pp.get("gb", 0), pp.get("gbk", 0)
        if gb == 0:
            continue
        key = site(pp["fs"], ftbl)
        by_site[key][0] += gb
        by_site[key][1] += gbk
        total += gb
        blocks += gbk
    print(f"heap live at the peak: {total} bytes in {blocks} blocks; "
          f"{total / connections:.0f} bytes and {blocks / connections:.1f} blocks per connection ({connections})")
    print(f"{'bytes/conn':>10} {'blocks/conn':>11}  first frame of interest")
    for key, (b, k) in sorted(by_site.items(), key=lambda kv: -kv[1][0])[:18]:
        print(f"{b / connections:10.0f} {k / connections:11.2f}  {key}")


if __name__ == "__main__":
    main()
