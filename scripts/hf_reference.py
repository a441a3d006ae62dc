#!/usr/bin/env python3
"""hf_reference.py - reference numbers from Hugging Face transformers for the random
checkpoints that scripts/make_random_model.lua writes (a development tool; the tests
only read its output, fixtures/models/random/<arch>.safetensors, and need no Python).

    for a in llama mistral qwen2 qwen3 qwen3_moe mixtral; do
      llmc scripts/make_random_model.lua --arch $a --out /tmp/rnd/$a
    done
    python3 scripts/hf_reference.py /tmp/rnd fixtures/models/random

For each model directory: load it with AutoModelForCausalLM (fp32, eager attention),
check that every checkpoint tensor was consumed and none was missing, and record
  input_ids.a [1, 12], logits.a [1, 12, V]             one sequence from position 0
  input_ids.b / attention_mask.b [2, 12], logits.b     a batch, row 1 left-padded by 4
  greedy.a [8]                                          8 greedy tokens after input a
  margin.a []                                           smallest top1-top2 logit gap met
  router_logits.a.layer.I [12, E]                       MoE layers only
and, in the metadata, "modules" (JSON [name, class] pairs of named_modules(), which
for the MoE architectures is transformers' own fused-expert layout and is not compared)
and "versions".
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    torch.manual_seed(0)
    for arch in sorted(os.listdir(src)):
        d = os.path.join(src, arch)
        model, info = AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        bad = {k: v for k, v in info.items() if v and k != "mismatched_keys"}
        if bad or info.get("mismatched_keys"):
            raise SystemExit(f"{arch}: loading info {info}")
        model.eval()
        V = model.config.vocab_size
        a = torch.tensor([[1] + [(i * 37 + 11) % V for i in range(11)]])
        b = torch.tensor([[1] + [(i * 53 + 7) % V for i in range(11)],
                          [0, 0, 0, 0, 1] + [(i * 29 + 3) % V for i in range(7)]])
        mb = torch.tensor([[1] * 12, [0] * 4 + [1] * 8])
        out = {}
        with torch.no_grad():
            ra = model(input_ids=a, output_router_logits=hasattr(model.config, "num_experts")
                       or hasattr(model.config, "num_local_experts"))
            rb = model(input_ids=b, attention_mask=mb)
            out["input_ids.a"] = a
            out["logits.a"] = ra.logits.float().contiguous()
            out["input_ids.b"] = b
            out["attention_mask.b"] = mb
            out["logits.b"] = rb.logits.float().contiguous()
            if getattr(ra, "router_logits", None):
                for i, r in enumerate(ra.router_logits):
                    if r is not None:
                        out[f"router_logits.a.layer.{i}"] = r.float().contiguous()
            # greedy by full recompute, recording how close each call was
            ids, margin = a, float("inf")
            new = []
            for _ in range(8):
                lg = model(input_ids=ids).logits[0, -1]
                top = torch.topk(lg, 2).values
                margin = min(margin, float(top[0] - top[1]))
                nxt = int(lg.argmax())
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            out["greedy.a"] = torch.tensor(new)
            out["margin.a"] = torch.tensor(margin)
        meta = {
            "modules": json.dumps([[n, type(m).__name__] for n, m in model.named_modules()]),
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
        }
        save_file(out, os.path.join(dst, arch + ".safetensors"), metadata=meta)
        print(arch, "margin", margin)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
