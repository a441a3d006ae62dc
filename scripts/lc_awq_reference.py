"""Reference AWQ grid search results from llm-compressor.

Dev-only (needs torch, transformers, compressed-tensors 0.19.0 and
llmcompressor 0.14.0.1; never used by the test suite).  Runs llm-compressor's
AWQModifier (transform, duo_scaling=True, n_grid=20) followed by
QuantizationModifier(scheme W4A16_ASYM, targets Linear, ignore lm_head) -
what the deprecated `llmcompressor.modifiers.awq.AWQModifier(scheme=...)`
builds - on the bundled tiny-llama loaded in float32 (llm-compressor then
computes in fp32 like llmc), with calibration token ids written by llmc so
both sides see the same tokens, and writes per mapping (smooth layer name):

  losses      the 20 grid losses, in grid order ((0.0, no duo), then
              ratio k/18 with duo scaling for k = 0..18)
  best        0-based grid index of the chosen point (first minimum)
  scales      the applied smoothing scales (float64 upstream), 9 digits
and per Linear the sum / abs-sum of the rescaled weight and the sums of
weight_scale / weight_zero_point, per norm the sum of its weight.

Two llm-compressor 0.14.0.1 quirks are patched around here (not behaviour):
pin_memory() of the cached parent inputs needs CUDA (algorithms.md sec. 8.3
port note) and becomes a no-op; datasets' fingerprinting cannot pickle a
pyarrow type in this environment.

  build/llmc scripts/dump_calib_ids.lua 8 64 > /tmp/ids.json
  PYTHONPATH=/tmp/lcenv python3 scripts/lc_awq_reference.py /tmp/ids.json tests/lua/data/awq_ref.json
"""
import json
import sys
import uuid

import torch
import datasets.fingerprint
from datasets import Dataset
from transformers import AutoModelForCausalLM

from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
from llmcompressor.modifiers.transform.awq import base as awq_base
from llmcompressor.pipelines import cache as lc_cache

MODEL = "fixtures/models/tiny-llama"


def _no_fingerprint(cls, value):
    return uuid.uuid4().hex


def main(ids_path, out_path):
    datasets.fingerprint.Hasher.hash = classmethod(_no_fingerprint)
    lc_cache.IntermediatesCache.pin_memory = lambda self, *a, **k: None

    record = {}
    current = {}
    orig_loss = awq_base.AWQModifier._compute_loss
    orig_best = awq_base.AWQModifier._compute_best_scale

    def compute_loss(self, fp, q):
        loss = orig_loss(self, fp, q)
        current["losses"].append(loss)
        return loss

    def compute_best_scale(self, mapping, fp_outputs, orig_weights):
        current["losses"] = []
        s = orig_best(self, mapping, fp_outputs, orig_weights)
        losses = current["losses"]
        best = min(range(len(losses)), key=lambda i: (losses[i], i))
        record[mapping.smooth_name] = {
            "parent": mapping.parent_name, "balance": list(mapping.balance_names),
            "losses": losses, "best": best, "scales_dtype": str(s.dtype).replace("torch.", ""),
            "scales": [float("%.9g" % v) for v in s.double().tolist()],
        }
        return s

    awq_base.AWQModifier._compute_loss = compute_loss
    awq_base.AWQModifier._compute_best_scale = compute_best_scale

    ids = json.load(open(ids_path))
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    recipe = [AWQModifier(duo_scaling=True, n_grid=20),
              QuantizationModifier(targets="Linear", scheme="W4A16_ASYM", ignore=["lm_head"])]
    oneshot(model=model, recipe=recipe, dataset=ds, num_calibration_samples=len(ids),
            max_seq_length=max(len(x) for x in ids), shuffle_calibration_samples=False)
    weights = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and hasattr(m, "weight_scale"):
            w = m.weight.detach().double()
            weights[name] = {"sum": w.sum().item(), "abs_sum": w.abs().sum().item(),
                             "scale_sum": m.weight_scale.detach().double().sum().item(),
                             "zp_sum": m.weight_zero_point.detach().double().sum().item()}
        elif name.endswith("layernorm"):
            weights[name] = {"sum": m.weight.detach().double().sum().item()}
    out = {"model": MODEL, "dtype": "float32", "samples": len(ids), "seq_len": max(len(x) for x in ids),
           "scheme": "W4A16_ASYM", "duo_scaling": True, "n_grid": 20, "mappings": record, "weights": weights}
    json.dump(out, open(out_path, "w"), separators=(",", ":"))
    print(len(record), "mappings;", {k: v["best"] for k, v in record.items()})


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1], sys.argv[2])
