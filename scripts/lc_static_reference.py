"""Reference static activation and KV-cache scales from llm-compressor.

Dev-only (needs torch, transformers, compressed-tensors 0.19.0 and
llmcompressor 0.14.0.1; never used by the test suite).  Runs llm-compressor's
oneshot on the bundled tiny-llama with calibration token ids written by llmc,
so both sides see exactly the same tokens, for three recipes that exercise
every static path:

  fp8_kv         scheme FP8 (static per-tensor fp8 inputs, static_minmax)
                 + kv_cache_scheme fp8 per tensor (observer default: minmax EMA)
  int8_asym_head custom group: int8 channel weights, int8 asymmetric static
                 per-tensor inputs (observer default: minmax EMA)
                 + kv_cache_scheme fp8 attn_head with static_minmax
  nvfp4          scheme NVFP4 (input_global_scale, static_minmax)

on the bf16 checkpoint as it is ("recipes") and loaded in float32
("recipes_f32": llm-compressor then computes in fp32 like llmc), and writes
every input_scale / input_zero_point / input_global_scale /
k_scale / v_scale of the saved checkpoints as JSON (values and dtypes).

  build/llmc scripts/dump_calib_ids.lua 16 64 > /tmp/ids.json
  PYTHONPATH=<site with llmcompressor> python3 scripts/lc_static_reference.py \
      /tmp/ids.json tests/lua/data/static_act_ref.json
"""
import json
import sys
import tempfile
import uuid

import torch
import datasets.fingerprint
from datasets import Dataset
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier

MODEL = "fixtures/models/tiny-llama"

KV_TENSOR = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
KV_HEAD = {"num_bits": 8, "type": "float", "strategy": "attn_head", "dynamic": False, "symmetric": True,
           "observer": "static_minmax"}
RECIPES = {
    "fp8_kv": lambda: QuantizationModifier(targets="Linear", scheme="FP8", ignore=["lm_head"],
                                           kv_cache_scheme=KV_TENSOR),
    "int8_asym_head": lambda: QuantizationModifier(ignore=["lm_head"], config_groups={"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": False, "strategy": "tensor",
                              "dynamic": False}}}, kv_cache_scheme=KV_HEAD),
    "nvfp4": lambda: QuantizationModifier(targets="Linear", scheme="NVFP4", ignore=["lm_head"]),
}
SUFFIXES = ("input_scale", "input_zero_point", "input_global_scale", "k_scale", "v_scale",
            "k_zero_point", "v_zero_point")


def _no_fingerprint(cls, value):
    # datasets 5.2 cannot pickle pyarrow 26's MonthDayNano type while
    # fingerprinting; the cache is not needed for a one-off run
    return uuid.uuid4().hex


def main(ids_path, out_path):
    datasets.fingerprint.Hasher.hash = classmethod(_no_fingerprint)
    ids = json.load(open(ids_path))
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    out = {"model": MODEL, "samples": len(ids), "seq_len": max(len(x) for x in ids), "recipes": {},
           "recipes_f32": {}}
    for (name, make), dtype in [(r, d) for d in ("auto", torch.float32) for r in RECIPES.items()]:
        key = "recipes" if dtype == "auto" else "recipes_f32"
        model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=dtype)
        with tempfile.TemporaryDirectory() as d:
            oneshot(model=model, recipe=make(), dataset=ds, num_calibration_samples=len(ids),
                    max_seq_length=out["seq_len"], shuffle_calibration_samples=False, output_dir=d)
            cfg = json.load(open(d + "/config.json"))["quantization_config"]
            vals = {}
            with safe_open(d + "/model.safetensors", "pt") as f:
                for k in sorted(f.keys()):
                    if k.rsplit(".", 1)[-1] in SUFFIXES:
                        t = f.get_tensor(k)
                        vals[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                                   "values": t.float().flatten().tolist()}
        out[key][name] = {"tensors": vals, "kv_cache_scheme": cfg.get("kv_cache_scheme"),
                                "format": cfg.get("format")}
        print(key, name, len(vals), "tensors", flush=True)
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1], sys.argv[2])
