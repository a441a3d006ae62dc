#!/usr/bin/env python3
"""validate_ct.py -- check llmc's compressed-tensors output against the
reference implementation (compressed-tensors, PyPI) on a model directory.

For every scheme:
  1. llmc quantizes the model with llmc.oneshot (QuantizationModifier,
     targets Linear, ignore lm_head) and also dumps its in-memory
     fake-quantized weights;
  (a) transformers + compressed-tensors load llmc's checkpoint and decompress
      it (CompressedTensorsConfig(run_compressed=False)); every quantized
      weight must equal llmc's fake-quantized weight;
  (b) compressed-tensors quantizes the same bf16 weights itself, on the CPU
      (memoryless min-max observer as llm-compressor's RTN: min/max per
      scale element, shared NVFP4 global scales for q/k/v and gate/up,
      calculate_qparams, generate_gparam, compress_module), and every tensor
      it writes must equal llmc's byte for byte; llmc's quantization_config
      must validate in compressed-tensors (QuantizationConfig, extra keys
      forbidden) and re-serialise to the same JSON.
A table per scheme is printed; the exit status is 0 when every check holds.

Optional tool, not part of the test suite.  Needs: torch, safetensors,
transformers, compressed-tensors (0.19.0: the version llmc implements).

  python3 scripts/validate_ct.py --llmc build/llmc [--model fixtures/models/tiny-llama]
                                 [--schemes FP8_BLOCK W4A16 ...] [--workdir /tmp/vct]

Runs compressed-tensors on the CPU: its GPU (Triton) path rounds int / fp8
quotients differently (docs: compressed-tensors-format.md section 3.4).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

DATA_FREE = ["W2A16", "W3A16", "W4A16", "W5A16", "W6A16", "W7A16", "W8A16", "W4A16_ASYM",
             "W8A8", "INT8", "W2A4", "W2A8", "W3A4", "W3A8", "W4A4", "W4A8", "W5A8", "W6A8",
             "W7A8", "W4AFP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4A16", "MXFP4A16", "MXFP4",
             "MXFP8A16", "MXFP8"]

LLMC_SCRIPT = r'''
local llmc = require "llmc"
local scheme, out, fake, model = arg[1], arg[2], arg[3], arg[4]
local m = llmc.oneshot{model = model, quiet = true, output_dir = out, overwrite = true,
  recipe = llmc.modifiers.QuantizationModifier{targets = "Linear", scheme = scheme, ignore = {"lm_head"}}}
local t = {}
for _, r in ipairs(m.quantization_summary.records) do t[r.name .. ".weight"] = r.module.weight end
require("llmc._safetensors").save(fake, t)
'''

FUSED = [("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("q_a_proj", "kv_a_proj_with_mqa"), ("w1", "w3")]


def run_llmc(llmc, model, scheme, workdir):
    script = os.path.join(workdir, "run.lua")
    with open(script, "w") as f:
        f.write(LLMC_SCRIPT)
    out = os.path.join(workdir, "llmc-" + scheme)
    fake = os.path.join(workdir, "fake-" + scheme + ".safetensors")
    subprocess.run([llmc, script, scheme, out, fake, model], check=True)
    return out, fake


def minmax(w, args):
    """Per-scale-element min / max as llm-compressor's weight observer sees
    them (compressed-tensors-format.md section 3.2), in w's dtype."""
    import torch
    rows, cols = w.shape
    s = args.strategy
    if s == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    if s == "channel":
        return w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    if s in ("group", "tensor_group"):
        g = w.reshape(rows, cols // args.group_size, args.group_size)
        return g.amin(dim=-1), g.amax(dim=-1)
    if s == "block":
        bh, bw = args.block_structure
        pr, pc = (-rows) % bh, (-cols) % bw
        p = torch.nn.functional.pad(w, (0, pc, 0, pr))
        t = p.reshape(p.shape[0] // bh, bh, p.shape[1] // bw, bw).transpose(1, 2)
        return t.amin(dim=(-1, -2)), t.amax(dim=(-1, -2))
    raise ValueError("strategy " + s)


def reference(model_dir, config):
    """compressed-tensors' own tensors for every quantized module."""
    import torch
    from safetensors.torch import load_file
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import (QuantizationConfig, QuantizationStatus,
                                                 initialize_module_for_quantization)
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    qc = QuantizationConfig.model_validate({k: v for k, v in config.items() if k != "version"})
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    # the modules llmc quantized: targets Linear, every *_proj of the decoder
    names = sorted(n[:-len(".weight")] for n in weights if n.endswith("_proj.weight"))
    scheme = next(iter(qc.config_groups.values()))
    wa = scheme.weights
    gscale = {}
    if wa.strategy == "tensor_group":
        by_parent = {}
        for n in names:
            parent, leaf = n.rsplit(".", 1)
            by_parent.setdefault(parent, {})[leaf] = n
        for parent, leaves in by_parent.items():
            for sib in FUSED:
                members = [leaves[x] for x in sib if x in leaves]
                if len(members) > 1:
                    mn = torch.stack([minmax(weights[m + ".weight"], wa)[0].min() for m in members]).min()
                    mx = torch.stack([minmax(weights[m + ".weight"], wa)[1].max() for m in members]).max()
                    g = generate_gparam(mn, mx)
                    for m in members:
                        gscale[m] = g
    out = {}
    for n in names:
        w = weights[n + ".weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        lin.weight.data.copy_(w)
        s = scheme.model_copy(deep=True)
        s.format = None
        initialize_module_for_quantization(lin, s, force_zero_point=True)
        mn, mx = minmax(w, wa)
        g = None
        if wa.strategy == "tensor_group":
            g = gscale.get(n)
            if g is None:
                g = generate_gparam(mn.min(), mx.max())
            lin.weight_global_scale.data.copy_(g)
        scale, zp = calculate_qparams(mn, mx, wa, global_scale=g)
        lin.weight_scale.data.copy_(scale.reshape(lin.weight_scale.shape))
        if hasattr(lin, "weight_zero_point"):
            lin.weight_zero_point.data.copy_(zp.reshape(lin.weight_zero_point.shape))
        lin.quantization_status = QuantizationStatus.FROZEN
        compress_module(lin)
        for k, v in lin.state_dict().items():
            out[n + "." + k] = v
    return out, qc


def check_scheme(args, scheme, workdir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    try:
        from transformers import CompressedTensorsConfig
    except ImportError:
        from transformers.utils.quantization_config import CompressedTensorsConfig
    out, fake = run_llmc(args.llmc, args.model, scheme, workdir)
    ours = load_file(os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json")) as f:
        qconf = json.load(f)["quantization_config"]
    row = {"scheme": scheme}
    # (b) compressed-tensors' own quantization, byte for byte
    ref, qc = reference(args.model, qconf)
    def raw(t):
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    n_eq = sum(1 for k, v in ref.items() if k in ours and ours[k].dtype == v.dtype
               and tuple(ours[k].shape) == tuple(v.shape) and raw(ours[k]) == raw(v))
    extra = sorted(k for k in ours if k.rsplit(".", 1)[0] + ".weight" not in ours and k not in ref
                   and not k.endswith(("layernorm.weight", "norm.weight", "embed_tokens.weight")))
    row["tensors"] = len(ref)
    row["bytes_equal"] = n_eq
    row["extra_or_missing"] = len(extra) + sum(1 for k in ref if k not in ours)
    dumped = qc.model_dump(mode="json")
    mine = {k: v for k, v in qconf.items() if k not in ("version", "quant_method", "sparsity_config", "transform_config")}
    theirs = {k: v for k, v in dumped.items() if k in mine}
    row["config_equal"] = json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    # (a) decompression by transformers + compressed-tensors
    try:
        qcfg = CompressedTensorsConfig(dequantize=True)
    except TypeError:
        qcfg = CompressedTensorsConfig(run_compressed=False)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16, quantization_config=qcfg)
    fakes = load_file(fake)
    worst, n_same = 0.0, 0
    sd = model.state_dict()
    for k, v in fakes.items():
        d = sd[k].to(torch.float32)
        diff = (d - v.to(torch.float32)).abs().max().item()
        worst = max(worst, diff)
        n_same += int(diff == 0.0)
    row["decompressed"] = len(fakes)
    row["decompressed_equal"] = n_same
    row["max_abs_diff"] = worst
    row["ok"] = (n_eq == len(ref) and row["extra_or_missing"] == 0 and row["config_equal"]
                 and n_same == len(fakes))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--llmc", required=True, help="path to the llmc executable")
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--model", default=os.path.join(here, "..", "fixtures", "models", "tiny-llama"))
    p.add_argument("--schemes", nargs="*", default=DATA_FREE)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    args.model = os.path.abspath(args.model)
    workdir = args.workdir or tempfile.mkdtemp(prefix="validate_ct.")
    os.makedirs(workdir, exist_ok=True)
    import compressed_tensors
    print(f"compressed-tensors {compressed_tensors.__version__} (CPU), model {args.model}")
    rows = []
    for s in args.schemes:
        try:
            rows.append(check_scheme(args, s, workdir))
        except Exception as e:  # report and go on with the next scheme
            rows.append({"scheme": s, "ok": False, "error": f"{type(e).__name__}: {e}"})
    hdr = f"{'scheme':<12} {'(b) tensors byte-equal':>22} {'config':>7} {'(a) decompressed = fake':>24} {'max|diff|':>10}  result"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "error" in r:
            print(f"{r['scheme']:<12} ERROR {r['error']}")
            continue
        print(f"{r['scheme']:<12} {str(r['bytes_equal']) + '/' + str(r['tensors']):>22} "
              f"{'same' if r['config_equal'] else 'DIFF':>7} "
              f"{str(r['decompressed_equal']) + '/' + str(r['decompressed']):>24} {r['max_abs_diff']:>10.3g}  "
              f"{'OK' if r['ok'] else 'FAIL'}")
    bad = [r["scheme"] for r in rows if not r["ok"]]
    print("all schemes agree with compressed-tensors" if not bad else "disagreements: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
