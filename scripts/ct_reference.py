#!/usr/bin/env python3
"""Reference bytes for llmc's quantization kernels, produced by compressed-tensors.

Writes tests/c/data/ct_reference.safetensors, read by tests/c/test_quant_ct.c.

    pip install compressed-tensors==0.19.0 safetensors
    python3 scripts/ct_reference.py [out.safetensors]

What it does, for small fixed-seed weights (bf16 [16, 256] with an all-zero
row, -0.0 entries, one-signed rows, tiny and large rows; bf16 [100, 200] for
the block padding rule; f16 and f32 [8, 256]):

  * for every preset scheme of compressed-tensors (spec §2): observe the weight
    with a min-max observer written here (LC memoryless_minmax: amin/amax over
    the flattened weight, spec §3.2 / §9), compute the global scale (LC
    get_global_scale -> CT generate_gparam) and scales / zero points with CT's
    own calculate_qparams, copy them into parameters of the weight dtype, and
    compress with CT's compressor for the inferred format (run on CPU, i.e.
    the eager path).  Every compressed tensor is stored, plus FNV-1a-64
    hashes of CT's decompress() and fake_quantize() outputs (kept as hashes
    to keep the file small).
  * "oneshot" variants (forced all-zero zero points, spec §3.4) for the fp8
    presets.
  * the fused (Triton-style) single-rounding mode of spec §3.4 / §3.13,
    emulated here in torch: t = fp32(x) / fp32(s) (+ z), clamp, round — for
    the int and fp8 presets whose bytes differ from the eager path.
  * dynamic activation quantize-dequantize (compute_dynamic_scales_and_zp +
    fake_quantize) of a [1, 8, 256] activation for every preset with
    dynamic input activations (NVFP4: "local", with the global scale).
  * the MSE observer (LC memoryless_mse, eager path, spec §9 / algorithms.md
    §4.2) re-implemented on top of CT's calculate_qparams / fake_quantize.

The file's __metadata__ holds "cases": a JSON list describing each case.
Runs CT on CPU with CT_ENFORCE_EAGER=1 so the eager path is used everywhere.
"""
import json
import os
import sys

os.environ["CT_ENFORCE_EAGER"] = "1"

import torch  # noqa: E402
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.compressors.format import infer_module_format  # noqa: E402
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationStrategy,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.lifecycle.forward import fake_quantize  # noqa: E402
from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES  # noqa: E402
from compressed_tensors.quantization.utils import (  # noqa: E402
    calculate_qparams,
    calculate_range,
    compute_dynamic_scales_and_zp,
    generate_gparam,
    maybe_pad_tensor_for_block_quant,
)
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/c/data/ct_reference.safetensors")

S = QuantizationStrategy
tensors = {}
cases = []


def fnv1a64(t: torch.Tensor) -> str:
    """FNV-1a 64-bit hash of a tensor's raw little-endian bytes, as hex."""
    data = t.contiguous().view(torch.uint8).flatten().tolist()
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def make_weights():
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(16, 256, generator=g) * 0.05
    w[2] = 0.0                                   # all-zero row: eps scales, zero groups
    w[3, 0:16] = 0.0                             # one all-zero NVFP4 group
    w[3, 32:64] = 0.0                            # one all-zero MX group
    w[5, ::7] = -0.0                             # exact -0.0 entries
    w[6, 100:110] = -1e-9                        # negative values that round to zero
    w[7] = w[7] * 60.0                           # large row (scales ~ 1)
    w[7, 3] = 3.0
    w[9] = w[9].abs() + 0.01                     # all positive: asymmetric zp at q_min
    w[10] = -(w[10].abs() + 0.02)                # all negative
    w[11] = w[11] * 1e-30                        # tiny: fp8 scale underflow, MX byte 0
    w[12] = w[12] * 1e4                          # huge
    main = w.to(torch.bfloat16)
    gb = torch.Generator().manual_seed(99)
    block = (torch.randn(100, 200, generator=gb) * 0.02).to(torch.bfloat16)
    block[99, 190:] = -0.0
    gh = torch.Generator().manual_seed(7)
    small = torch.randn(8, 256, generator=gh) * 0.05
    small[1] = 0.0
    small[4] = small[4] * 1e-3                   # f16 subnormal territory
    return {
        "w_bf16": main,
        "w_block": block,
        "w_f16": small.to(torch.float16),
        "w_f32": small.clone(),
    }


WEIGHTS = make_weights()
for k, v in WEIGHTS.items():
    tensors[k] = v


def flatten_weight(w, args):
    """(1, *scale_grid, elements) view used by LC observers (spec §3.2)."""
    if args.strategy == S.TENSOR:
        return w.reshape(1, 1, -1)
    if args.strategy == S.CHANNEL:
        return w.unsqueeze(-2).unsqueeze(0)
    if args.strategy in (S.GROUP, S.TENSOR_GROUP):
        return w.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    if args.strategy == S.BLOCK:
        bh, bw = args.block_structure
        p = maybe_pad_tensor_for_block_quant(w, args.block_structure)
        r, c = p.shape
        return p.reshape(r // bh, bh, c // bw, bw).transpose(1, 2).flatten(-2, -1).unsqueeze(0)
    raise ValueError(args.strategy)


def minmax_observe(w, args):
    obs = flatten_weight(w, args)
    return torch.amin(obs, dim=(0, -1)), torch.amax(obs, dim=(0, -1))


def mse_observe(w, args, maxshrink=0.2, patience=5, grid=100.0, norm=2.4, expand=1.0):
    """LC memoryless_mse, eager path: one global patience counter; candidates
    scaled by p = 1 - i/grid; tensor_group drops scale_dtype and the global
    scale; error = sum |fq(x) - x|^norm per scale element, all in w's dtype."""
    obs = flatten_weight(w, args)
    if args.strategy == S.TENSOR_GROUP and args.scale_dtype is not None:
        args = args.model_copy(update={"scale_dtype": None})
    tok = args.model_copy(update={"strategy": S.TOKEN})
    lo = torch.amin(obs, dim=(0, -1)) * expand
    hi = torch.amax(obs, dim=(0, -1)) * expand
    best = torch.full_like(lo, torch.finfo(lo.dtype).max)
    bmin, bmax = lo.clone(), hi.clone()
    stale = 0
    for i in range(int(maxshrink * grid)):
        p = 1 - i / grid
        cmin, cmax = lo * p, hi * p
        s, z = calculate_qparams(cmin, cmax, args, global_scale=None)
        q = fake_quantize(obs, s.unsqueeze(-1), z.unsqueeze(-1), tok).to(obs.dtype)
        err = torch.sum((q - obs).abs().pow(norm), dim=(0, -1))
        better = err < best
        if torch.any(better):
            best[better] = err[better]
            bmin[better] = cmin[better]
            bmax[better] = cmax[better]
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    return bmin, bmax


def global_scale(mn, mx):
    amax = torch.max(mx.max(), -mn.min())
    return generate_gparam(-amax.reshape(1), amax.reshape(1))


def qparams(w, args, observer="minmax"):
    mn, mx = (mse_observe if observer == "mse" else minmax_observe)(w, args)
    g = global_scale(mn, mx) if args.strategy == S.TENSOR_GROUP else None
    scale, zp = calculate_qparams(mn, mx, args, global_scale=g)
    # copied into the module's parameters (spec §3.11): scale in W, zp in zp_dtype
    return scale.to(w.dtype), zp.to(args.zp_dtype), g


def expand_grid(t, w, args):
    """scale-grid tensor -> elementwise [rows, cols] (for the fused emulation)"""
    r, c = w.shape
    if args.strategy == S.TENSOR:
        return t.reshape(1, 1).expand(r, c)
    if args.strategy == S.CHANNEL:
        return t.reshape(r, 1).expand(r, c)
    if args.strategy in (S.GROUP, S.TENSOR_GROUP):
        return t.repeat_interleave(args.group_size, dim=1)
    bh, bw = args.block_structure
    return t.repeat_interleave(bh, dim=0).repeat_interleave(bw, dim=1)[:r, :c]


def fused_codes(w, scale, zp, args, g):
    """Spec §3.4 'CUDA path': fp32 division of the upcast operands, one rounding."""
    s = expand_grid(scale, w, args).float()
    if g is not None:
        s = s / g.float()
    t = w.float() / s
    if zp is not None:
        t = t + expand_grid(zp, w, args).float()
    qmin, qmax = calculate_range(args, "cpu")
    t = torch.clamp(t, qmin, qmax)
    if args.type == "int":
        return torch.round(t).to(torch.int8)
    return t.to(torch.float8_e4m3fn)


def add_case(name, preset, weight, mode, fmt, out, extra=None, hash_only=()):
    """Store a case's tensors as "<case>.<suffix>"; tensors named in hash_only
    are kept as an FNV-1a-64 hash ("hashes": {suffix: hex}) to save space."""
    names, hashes = [], {}
    for k, v in out.items():
        if k in hash_only:
            hashes[k] = fnv1a64(v)
            continue
        key = f"{name}.{k}"
        tensors[key] = v.contiguous()
        names.append(k)
    c = {"name": name, "preset": preset, "weight": weight, "mode": mode, "format": fmt,
         "tensors": sorted(names), "hashes": hashes}
    if extra:
        c.update(extra)
    cases.append(c)


def weight_case(preset, wname, mode="eager", observer="minmax"):
    w = WEIGHTS[wname]
    scheme = preset_name_to_scheme(preset, ["Linear"])
    args = scheme.weights
    scale, zp, g = qparams(w, args, observer)
    force_zp = mode == "oneshot"
    sd = {"weight": w, "weight_scale": scale}
    if not args.symmetric or force_zp:
        sd["weight_zero_point"] = zp
    if g is not None:
        sd["weight_global_scale"] = g
    fmt = infer_module_format(torch.nn.Linear, scheme)
    comp = BaseCompressor.get_value_from_registry(fmt.value)
    out = comp.compress(dict(sd), scheme)
    extra = {"observer": observer}
    if mode == "fused":
        codes = fused_codes(w, scale, zp if "weight_zero_point" in sd else None, args, g)
        if "weight_packed" in out:
            out["weight_packed"] = pack_to_int32(codes, args.num_bits)
        else:
            out["weight"] = codes
    else:
        dec = comp.decompress(dict(out), scheme)["weight"]
        fq = fake_quantize(w, scale, sd.get("weight_zero_point"), args, global_scale=g)
        extra["decompressed_dtype"] = str(dec.dtype).replace("torch.", "")
        extra["decompressed_fnv"] = fnv1a64(dec)
        extra["fake_quant_fnv"] = fnv1a64(fq)
    suffix = "" if mode == "eager" else "@" + mode
    if observer != "minmax":
        suffix += "@" + observer
    # MSE codes and the fused block codes are kept as hashes (file size)
    big = ("weight", "weight_packed") if observer != "minmax" or (
        mode == "fused" and wname == "w_block") else ()
    add_case(f"{preset}@{wname}{suffix}", preset, wname, mode, fmt.value, out, extra, big)


def act_case(preset):
    scheme = preset_name_to_scheme(preset, ["Linear"])
    args = scheme.input_activations
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(1, 8, 256, generator=g) * 2.0).to(torch.bfloat16)
    x[0, 3] = 0.0
    x[0, 4, 0:40] = -0.0
    gs = None
    if args.strategy == S.TENSOR_GROUP:
        amax = x.abs().max()
        gs = generate_gparam(-amax.reshape(1), amax.reshape(1))
    scale, zp = compute_dynamic_scales_and_zp(x, args, module=None, global_scale=gs)
    y = fake_quantize(x, scale, zp, args, global_scale=gs)
    name = f"{preset}@act"
    if "x_act" not in tensors:
        tensors["x_act"] = x.reshape(8, 256).contiguous()
    out = {"y": y.reshape(8, 256), "scale": scale.reshape(-1).float()}
    if gs is not None:
        out["global_scale"] = gs
    add_case(name, preset, "x_act", "dynamic", "dense", out, hash_only=("y",))


def main():
    presets = [p for p in PRESET_SCHEMES if p != "UNQUANTIZED"]
    for p in presets:
        weight_case(p, "w_bf16")
    for p in ("W4A16", "W4A16_ASYM", "W8A8", "W3A16", "FP8", "FP8_DYNAMIC", "NVFP4A16",
              "MXFP4A16", "MXFP8A16"):
        weight_case(p, "w_f16")
        weight_case(p, "w_f32")
    for p in ("FP8_BLOCK",):
        weight_case(p, "w_block")
    for p in ("FP8", "FP8_DYNAMIC", "MXFP8"):
        weight_case(p, "w_bf16", mode="oneshot")
    for p in ("W4A16", "W4A16_ASYM", "W8A16", "W8A8", "FP8", "FP8_DYNAMIC"):
        weight_case(p, "w_bf16", mode="fused")
    weight_case("FP8_BLOCK", "w_block", mode="fused")
    weight_case("W4A16", "w_f16", mode="fused")
    for p in ("W4A16", "W4A16_ASYM", "FP8_DYNAMIC", "NVFP4A16", "MXFP4A16", "FP8"):
        weight_case(p, "w_bf16", observer="mse")
    weight_case("FP8_BLOCK", "w_block", observer="mse")
    weight_case("W8A8", "w_f32", observer="mse")
    for p in presets:
        s = preset_name_to_scheme(p, ["Linear"])
        if s.input_activations is not None and s.input_activations.dynamic:
            act_case(p)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata={"format": "pt", "cases": json.dumps(cases),
                                      "generator": "scripts/ct_reference.py",
                                      "compressed_tensors": __import__("compressed_tensors").__version__,
                                      "torch": torch.__version__})
    print(f"{OUT}: {len(cases)} cases, {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
