"""Reference SmoothQuant weights from llm-compressor (dev-only).

Needs torch, transformers, compressed-tensors 0.19.0 and llmcompressor
0.14.0.1; the test suite never runs it.  Runs llm-compressor's oneshot with
SmoothQuantModifier(smoothing_strength=0.8) (default mappings: q/k/v <-
input_layernorm, gate/up <- post_attention_layernorm; the default
"independent" pipeline, i.e. sequential over the decoder layers) on the
bundled bf16 tiny-llama, with calibration token ids written by llmc so that
both sides see exactly the same tokens, and stores compact statistics:

  scales      per mapping (smooth layer name): the smoothing scales s_j
              (bf16, before the 1e-5 clamp) and the activation ranges
              a_j = max_j - min_j (bf16), all 256 channels
  tensors     per smoothed weight (q/k/v/gate/up and the two norms of every
              layer): sum and sum of squares (float64 over the bf16 values),
              and the values at a few fixed flat indices
  recipe_yaml the recipe.yaml llm-compressor saves

  build/llmc scripts/dump_calib_ids.lua 8 64 > /tmp/sq_ids.json
  PYTHONPATH=<site with llmcompressor> python3 scripts/lc_smoothquant_reference.py \
      /tmp/sq_ids.json tests/lua/data/smoothquant_ref.json
"""
import json
import sys
import tempfile
import uuid

import torch
import datasets.fingerprint
from datasets import Dataset
from transformers import AutoModelForCausalLM

from llmcompressor import oneshot
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

MODEL = "fixtures/models/tiny-llama"
ALPHA = 0.8
SMOOTHED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj",
            "input_layernorm", "post_attention_layernorm")


def _no_fingerprint(cls, value):
    # datasets 5.2 cannot pickle pyarrow 26's MonthDayNano type while
    # fingerprinting; the cache is not needed for a one-off run
    return uuid.uuid4().hex


def sample_indices(n):
    return sorted({0, 1, 7, n // 5, n // 3, n // 2, (2 * n) // 3, n - 2, n - 1})


def main(ids_path, out_path):
    datasets.fingerprint.Hasher.hash = classmethod(_no_fingerprint)
    ids = json.load(open(ids_path))
    ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype="auto")
    names = {m: n for n, m in model.named_modules()}

    # record the scales of every mapping as llm-compressor computes them
    scales = {}
    orig = SmoothQuantModifier._calculate_smoothing_scales

    def record(self, balance_layers, activation_scales):
        s = orig(self, balance_layers, activation_scales)
        layer = names[balance_layers[0]].rsplit(".", 2)[0]   # model.layers.N
        which = "input_layernorm" if names[balance_layers[0]].endswith("q_proj") else "post_attention_layernorm"
        scales[layer + "." + which] = {
            "dtype": str(s.dtype).replace("torch.", ""),
            "scale": s.float().tolist(),
            "range": activation_scales.float().tolist(),
        }
        return s

    SmoothQuantModifier._calculate_smoothing_scales = record
    with tempfile.TemporaryDirectory() as d:
        model = oneshot(model=model, recipe=SmoothQuantModifier(smoothing_strength=ALPHA), dataset=ds,
                        num_calibration_samples=len(ids), max_seq_length=max(len(x) for x in ids),
                        shuffle_calibration_samples=False, output_dir=d)
        recipe_yaml = open(d + "/recipe.yaml").read()
    sd = model.state_dict()
    tensors = {}
    for k, t in sd.items():
        if not k.endswith(".weight") or not any(s in k for s in SMOOTHED):
            continue
        v = t.detach().to(torch.float64).flatten()
        idx = sample_indices(v.numel())
        tensors[k] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                      "sum": v.sum().item(), "sumsq": (v * v).sum().item(),
                      "index": idx, "values": [v[i].item() for i in idx]}
    out = {"model": MODEL, "smoothing_strength": ALPHA, "samples": len(ids),
           "seq_len": max(len(x) for x in ids), "scales": scales, "tensors": tensors,
           "recipe_yaml": recipe_yaml}
    json.dump(out, open(out_path, "w"), separators=(",", ":"))
    print(len(scales), "mappings,", len(tensors), "tensors ->", out_path)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1], sys.argv[2])
