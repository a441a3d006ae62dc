"""Reference SparseGPT / Wanda results from llm-compressor (dev-only).

Needs torch, transformers, compressed-tensors 0.19.0 and llmcompressor
0.14.0.1; never used by the test suite.  Runs llm-compressor's oneshot on the
bundled tiny-llama loaded in float32, with calibration token ids written by
llmc (so both sides see exactly the same tokens), for

  sgpt_24      SparseGPTModifier(sparsity=0.5, mask_structure="2:4")
  sgpt_50      SparseGPTModifier(sparsity=0.5)            (unstructured)
  wanda_50     WandaPruningModifier(sparsity=0.5)         (unstructured)
  wanda_24     WandaPruningModifier(sparsity=0.5, mask_structure="2:4")

all with ignore=["re:.*lm_head"] (llm-compressor's own samples: with the
default targets ["Linear"] a plain "lm_head" does not match, because the
hooked name of a targeted Linear is "<name>." — see docs/sparsity.md), and
for the saved config.json only:

  sgpt_24_fp8  SparseGPT 2:4 on the decoder layers then QuantizationModifier
               FP8_DYNAMIC (llm-compressor's 2:4 example)

It writes, per pruned Linear: the number of zeros, an FNV-1a hash of the
zero mask (row-major flat indices of the zeros), the number of zeros of the
first 4 rows, sum / sum|.| / sum of squares of the weight and its first 8
values, plus the quantization_config of every saved config.json.

  build/llmc scripts/dump_calib_ids.lua 8 64 > /tmp/ids8.json
  PYTHONPATH=/tmp/lcenv python3 scripts/lc_sparsity_reference.py \\
      /tmp/ids8.json tests/lua/data/sparsity_ref.json [/tmp/lc_sparse]

The optional third argument keeps every saved checkpoint (<dir>/<recipe>).
To count the exact mask / weight differences against an llmc checkpoint:

  PYTHONPATH=/tmp/lcenv python3 scripts/lc_sparsity_reference.py \\
      --compare /tmp/lc_sparse/sgpt_24 <llmc output_dir>
"""
import json
import os
import shutil
import sys
import tempfile
import uuid

import numpy as np
import torch
import datasets.fingerprint
from datasets import Dataset
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from llmcompressor import oneshot
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
from llmcompressor.modifiers.quantization import QuantizationModifier

MODEL = "fixtures/models/tiny-llama"
IGN = ["re:.*lm_head"]

RECIPES = {
    "sgpt_24": lambda: SparseGPTModifier(sparsity=0.5, mask_structure="2:4", ignore=IGN),
    "sgpt_50": lambda: SparseGPTModifier(sparsity=0.5, ignore=IGN),
    "wanda_50": lambda: WandaPruningModifier(sparsity=0.5, ignore=IGN),
    "wanda_24": lambda: WandaPruningModifier(sparsity=0.5, mask_structure="2:4", ignore=IGN),
    "sgpt_24_fp8": lambda: [
        SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=[r"re:model.layers.\d*$"]),
        QuantizationModifier(targets="Linear", ignore=["lm_head"], scheme="FP8_DYNAMIC"),
    ],
}
STATS_RECIPES = ("sgpt_24", "sgpt_50", "wanda_50", "wanda_24")


def fnv1a(idx):
    """FNV-1a 32-bit over the little-endian uint32 bytes of each index (the
    same function is in tests/lua/test_sparsity.lua)."""
    h = 2166136261
    for v in idx.tolist():
        for k in range(4):
            h ^= (v >> (8 * k)) & 0xFF
            h = (h * 16777619) & 0xFFFFFFFF
    return h


def stats(w):
    w = w.float()
    z = (w == 0).flatten().nonzero().flatten().numpy().astype(np.int64)
    rows = [(w[r] == 0).sum().item() for r in range(4)]
    d = w.double()
    return {"zeros": int(z.size), "hash": fnv1a(z), "row_zeros": rows, "sum": d.sum().item(),
            "abs_sum": d.abs().sum().item(), "sq_sum": (d * d).sum().item(),
            "first": w.flatten()[:8].tolist(), "shape": list(w.shape)}


def _no_fingerprint(cls, value):
    # datasets 5.2 cannot pickle pyarrow 26's MonthDayNano type while
    # fingerprinting; the cache is not needed for a one-off run
    return uuid.uuid4().hex


def run(ids_path, out_path, keep=None):
    datasets.fingerprint.Hasher.hash = classmethod(_no_fingerprint)
    ids = json.load(open(ids_path))
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    out = {"model": MODEL, "dtype": "float32", "samples": len(ids), "seq_len": max(len(x) for x in ids),
           "recipes": {}}
    for name, make in RECIPES.items():
        model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
        d = tempfile.mkdtemp()
        try:
            oneshot(model=model, recipe=make(), dataset=ds, num_calibration_samples=len(ids),
                    max_seq_length=out["seq_len"], shuffle_calibration_samples=False, output_dir=d)
            cfg = json.load(open(d + "/config.json"))
            rec = {"quantization_config": cfg.get("quantization_config"), "modules": {}}
            if name in STATS_RECIPES:
                with safe_open(d + "/model.safetensors", "pt") as f:
                    for k in sorted(f.keys()):
                        if k.endswith("_proj.weight"):
                            rec["modules"][k[: -len(".weight")]] = stats(f.get_tensor(k))
                    rec["tensors"] = sorted(f.keys())
            out["recipes"][name] = rec
            if keep:
                os.makedirs(keep, exist_ok=True)
                shutil.rmtree(os.path.join(keep, name), ignore_errors=True)
                shutil.copytree(d, os.path.join(keep, name))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        print(name, "done", flush=True)
    json.dump(out, open(out_path, "w"), indent=1, sort_keys=True)


def load_weights(d):
    out = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), "pt") as f:
                for k in f.keys():
                    if k.endswith("_proj.weight"):
                        out[k] = f.get_tensor(k).float()
    return out


def compare(lc_dir, llmc_dir):
    a, b = load_weights(lc_dir), load_weights(llmc_dir)
    total = flips = 0
    worst = 0.0
    for k in sorted(a):
        if k not in b:
            print("missing in llmc:", k)
            continue
        x, y = a[k], b[k]
        mx, my = x == 0, y == 0
        f = (mx != my).sum().item()
        both = ~mx & ~my
        rel = ((x - y)[both].norm() / x[both].norm()).item()
        worst = max(worst, rel)
        total += mx.numel()
        flips += f
        print(f"{k:45s} zeros lc {mx.sum().item():7d} llmc {my.sum().item():7d} mask diff {f:5d}  "
              f"rel diff of kept weights {rel:.3e}  max abs {(x - y)[both].abs().max().item():.3e}")
    print(f"total: {flips} of {total} mask entries differ ({100.0 * flips / max(total, 1):.4f} %); "
          f"worst relative weight difference {worst:.3e}")


if __name__ == "__main__":
    torch.manual_seed(0)
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        run(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
