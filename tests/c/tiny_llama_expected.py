#!/usr/bin/env python3
"""Independent reference for tests/c/test_safetensors.c.

Parses fixtures/models/tiny-llama/model.safetensors with the standard
library only (struct + json; no safetensors, numpy or torch) and prints:
  - the header length, the data size and the __metadata__ map;
  - every tensor as a C initializer: {"name", "DTYPE", ndim, {shape}, begin, end};
  - for a few bf16 tensors: element count, sum and sum of squares of the
    values (bf16 decoded by hand: the 16 bits are the high half of an f32),
    summed exactly with math.fsum.
The output is pasted into test_safetensors.c.

usage: python3 tests/c/tiny_llama_expected.py [path/to/model.safetensors]
"""
import json
import math
import struct
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "fixtures/models/tiny-llama/model.safetensors"
with open(path, "rb") as f:
    blob = f.read()

(hlen,) = struct.unpack_from("<Q", blob, 0)
header = json.loads(blob[8:8 + hlen].decode("utf-8"))
data = memoryview(blob)[8 + hlen:]
meta = header.pop("__metadata__", None)
print(f"/* header_len = {hlen}, data_size = {len(data)}, metadata = {json.dumps(meta)} */")
print(f"/* {len(header)} tensors */")
for name in sorted(header):
    e = header[name]
    shape = e["shape"]
    b, en = e["data_offsets"]
    dims = ", ".join(str(d) for d in shape)
    print(f'  {{"{name}", "{e["dtype"]}", {len(shape)}, {{{dims}}}, {b}, {en}}},')


def bf16_stats(name):
    e = header[name]
    assert e["dtype"] == "BF16"
    b, en = e["data_offsets"]
    raw = data[b:en]
    n = (en - b) // 2
    halves = struct.unpack(f"<{n}H", raw)
    vals = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    return n, math.fsum(vals), math.fsum(v * v for v in vals)


print("/* name, count, sum, sum of squares */")
for name in ("model.norm.weight",
             "model.layers.0.self_attn.q_proj.weight",
             "model.layers.3.mlp.down_proj.weight",
             "model.embed_tokens.weight"):
    n, s, s2 = bf16_stats(name)
    print(f'  {{"{name}", {n}, {s!r}, {s2!r}}},')
