-- test_oneshot_presets.lua — llmc.oneshot with every preset that needs no
-- calibration data, on the bundled tiny-llama (ignore lm_head), and a few
-- recipe variants: the whole output (model.safetensors, config.json,
-- recipe.yaml) must be byte-identical to what llm-compressor 0.14.0.1 +
-- compressed-tensors 0.19.0 wrote on a CPU for the same recipe (SHA-256 of
-- their files below; produced by running oneshot on this fixture).  Then the
-- central round trip: every quantized weight decompressed from the written
-- tensors (unpack + dequantize) equals the fake-quantized weight the
-- in-memory model runs with.
local llmc = require "llmc"
local util = llmc.util

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", msg, "\n") end
end
if not util.fs then print("SKIP: needs the llmc executable"); os.exit(77) end
local function sha256(path)
  local p = io.popen("sha256sum '" .. path .. "' 2>/dev/null")
  local s = p and p:read("a") or ""
  if p then p:close() end
  return s:match("^(%x+)")
end
if not sha256(llmc.bundled("models/tiny-llama/config.json")) then print("SKIP: sha256sum not found"); os.exit(77) end

-- name = {model.safetensors, config.json, recipe.yaml} SHA-256 of llm-compressor's output
local LC = {
  ["FP8_BLOCK"] = {"b57197db644aa8be567e52488e53ca9d01357b1b371bcdcd99a586a7ad4f2fbf",
    "82bf934d0496bdc7b8b671cc818be22fe95edf9b534f6c82a3b403207904d70a",
    "8bd410f425fc49703eca656a0951ffb3c8ef0644b51e2fe40cd95b6b9e807be6"},
  ["FP8_DYNAMIC"] = {"88ee913a6e91aaf9f6eea40a77db6e168cb956a07dba75c4e3095c55d8687c5c",
    "2811b21db46d9fdddc8f9cfda4c31b3ca5edf140ef60e8dce7a1afcc0c40aeae",
    "2c5c08e18060ae771332046fea8a03a86f46071e78cbfebbd2fe25ee33915d03"},
  ["INT8"] = {"2bea5a204651563d1b4226293ecc84aaf1cc9f4f84d0b3369b2d2b366f5e033a",
    "07eb301ecd9eb26e968d2621586c15eeed44d5e333107dd58b56849854f58f06",
    "fde92681b07339013fa19bd8aada599e902e2e99ef7eafcbf057a767e9e9f796"},
  ["MXFP4"] = {"e83c3e262a660899756e59cfdda947077f0b920a82e4b79b38b9293d17b60f36",
    "8e476aa5f08d0b83541e2bdf68ab7c083bd7e4c32cc230529a48285d34489813",
    "c21c2b70d6c38c9153684d0ed2ba7d5ec03768706e8debb18e2c7a85be1fa032"},
  ["MXFP4A16"] = {"e83c3e262a660899756e59cfdda947077f0b920a82e4b79b38b9293d17b60f36",
    "c25dbac4625fbf12d312824203a962aae1d50672bc49c1027c5056868f6b4a25",
    "3c802b6233cf59530c5d5407fcd697812b06c7b1a4754a79842cb5f2976a1118"},
  ["MXFP8"] = {"f2453a73b6464ca5f7dfbbe6372c3bb1786e21c095d4945f19b48c2ca300aa0c",
    "75ad3e330c1b490c9aa65344cbaaa8ddb0d02194ce49ea83bb76d83821124cce",
    "75b29b33aa446e45276be72085a915b3b4fdd9788fdf8c7d2296a3c7719a90fd"},
  ["MXFP8A16"] = {"f2453a73b6464ca5f7dfbbe6372c3bb1786e21c095d4945f19b48c2ca300aa0c",
    "91b18a64c27e3e1755167de7daa1b338cdff6e6953ce426649845e01fccd8d38",
    "a42493cf45107f5ebb1520dd1e9f9fab75e61c28c0fe8e899e8da8174dc187c5"},
  ["NVFP4A16"] = {"cecc20443355cd428e05ca6082e48cbfd0b6519731365f986ae118b89109df10",
    "491b17fda031c7204e867ec03a01ef28089584ee0f0efe7b2bc4f543827252a9",
    "dc6ae0446e00880145654f0b38c59e2d3047b2282a9939beddb5b5524c8ca61c"},
  ["W2A16"] = {"3d73c5bdc2eac3870f7f701ffb3f38c9c8ddf4cde3ea7c87a95a10de6adfc078",
    "4a2e08bc1b73a8f026b234b493cbe038a7f1b63292ff03b3faa39fcdd0448215",
    "72c90c041a51d8405b8e622f995f2271b3edfe707782b6c5ed7118da6e76529c"},
  ["W2A4"] = {"4754d8cd9e9f6c4b4d067c45d2c196f78fc846c4a5349b10af3eeed2bd6c69e8",
    "578de5f4b5f29e75fe8cd5ed9f348e0f34bd562e2213bce0b97b730b3ac2f14c",
    "0e57208a9033c09b854bbe4e5e9dc2ee9da962b95a514981399e64c55b724b07"},
  ["W3A16"] = {"e6da93e279021564514f40f818009eedd9674aa7cfb894e999809ef47daea681",
    "2d45eb2bb861f2ebbbdb7b64eedcf3e84931f7083b1d6846978f879cd00ed3d3",
    "23fb960f4175d628485efdc950de37d0b74e6a01a5dfd42d69de0e21f159c40d"},
  ["W3A8"] = {"8893ba3a3e39a05dedf81bfbf254ca1193e8c92a0189e34af135a571e267c44a",
    "2719d92dc76d1e05013dc8cfc198838d99eec5cf104a2504ff2378b6287051ed",
    "0686bfd5881bbff9a25fb0d4567962d686229a8d8e44ded61de160686cd05587"},
  ["W4A16"] = {"099d0eb70476c41cd0f84bc7ec956e074d17ec7e7193f92ba98cdc1119c53239",
    "baee27cefd2f1c7f4f0a3d705f40a5fc1132cf6339e730244dc1a7f415e97d1b",
    "9921b1102762e64a2447cadb14baa1e372094cd524f48bc4a6bb9eac434e6984"},
  ["W4A16_ASYM"] = {"e91a6e55e7ec37b3228fb0d55a56454846b90ee06f7ff8b03558bc010174cdde",
    "ddfa7e7285c440ec1c916048ea54972828fe931d2a9b88205846e3c66658d5c9",
    "4447933ed4c674348c88b1bdb529a0607087431572de92215b265104cfc1bbf8"},
  ["W4A4"] = {"4cb31e384c3fea83ddf531f0259abb613a44f195873e7722f92a9edc52e222ab",
    "42846ba7afc9ca8fde010e0d75671abaffd82208f3db5dae638cb59ce8d1eb6f",
    "c6e36dfdfe6de135e742945c1ff177c56e8f2de5bdd23c016fc1b263c901b41a"},
  ["W4A8"] = {"4cb31e384c3fea83ddf531f0259abb613a44f195873e7722f92a9edc52e222ab",
    "bad561629e0270a531d875f9f324092017f94deeb151f8445945b8995ad3a132",
    "2cd5519bc9dbdebf1c06964d88cf3c3caeaad13b761c1200286e691d50ac3fc0"},
  ["W4AFP8"] = {"4cb31e384c3fea83ddf531f0259abb613a44f195873e7722f92a9edc52e222ab",
    "7d3d05dabdc6eb881c7f7552ab5101d50f6fa86cb62b31fc5eaf7d9564a078c2",
    "691d83e7519432aeac92bb875e99e27bc76719a03be1a7350bee7cbe2f45f976"},
  ["W5A16"] = {"9b4d54e822d20327def0fc9869236f785014a34a29af2a53083f23ef6b69a4a8",
    "518ba7a33cb19c8b315c94ae76d82944913764f9d676652e115ebd58ddc4dda8",
    "f0a37e5c397972d140a8f24e7f2812dfc21acac27c34f16c2c255a9b5d0aa9dd"},
  ["W6A16"] = {"d637bf4e407e51f59da4f7114da46b4914183e18a97ce9a652b2347eedc06dca",
    "ef9599c37491013a094c79b9dcac2aa8fd90194f096e28c217d38ec01969b48a",
    "1156ca4dfb213814fc0f95d9f375f449ac2651b9f0f430db005d4212681ee58e"},
  ["W7A16"] = {"f6d8e5b2fc6b9486fe7b8f8e33f74acb246341c17154c6b7240500b5880b898c",
    "e9fe0615a0a04ea5670f6499f5f21e27f51bc3376e5c0a32b4d1d3a7fb53d34b",
    "a1d75a5aa529d28df97c3c35dd06db51a4938b480f295f88422907891f1252b3"},
  ["W8A16"] = {"3e5b0c45a54d724db0131685c682dc4d4c00f777b98a27aec7b2d240e6c9f5e0",
    "6868e6e36e1550933d7aa969db4fccb6de433be541b6fdb060d097b0a46c7554",
    "663199368f8e62290750fe13633da6000aa639859bdbf9e345280bf9579dd2ff"},
  ["W8A8"] = {"2bea5a204651563d1b4226293ecc84aaf1cc9f4f84d0b3369b2d2b366f5e033a",
    "07eb301ecd9eb26e968d2621586c15eeed44d5e333107dd58b56849854f58f06",
    "b536141028b76cd611832fb1a474d95b87b8bffdaec784b6fd421c79817baf11"},
  ["custom_groups"] = {"6f4f937bd30525fd14212bf81b58597e650270621d7467205264b38a9789d6c1",
    "45808808d42550cb0a8c9ecd538fd2f10852d51451631f5cd5db6504623baf43",
    "c36e13729fff0a5f78bc572e01280374aa49d2bc935023d0fc6242342d48a175"},
  ["scheme_dict"] = {"efd4b411a7d5933937ad1a804942ab45c1a2df9c5146efed9ec58f06ac261332",
    "6a9ce486f04627a9aaddebb7eeed1e1de2d00a5720b9e1c25ffce56fc986f245",
    "943529d9e8b8301dab3e067d05b1b928147a20e44194c42385b1c0226d6ca705"},
  ["w4a16_head"] = {"b5ad7f9e05ab722ec4f53ea2f5ba4f2c178db64459a47d951001286f40dee0c5",
    "076a691f441d45f02547f0bf3e62ae6b32023e99d8ffe6ac6ec6346069989353",
    "0c6348792c8ba5d83604f3f6eea86a73119a8531eff1cb19cdfdd0ac372c3ff3"},
  ["w4a16_mse"] = {"54b6d56fbf34056e7495423928c0293723e42de03b1bb80e05ea1c86e70d72c6",
    "d3dea6b5e9c0a0ad2f1da9f9b01f576b70abbdae05295ed42e05b04519850e16",
    "506f8d9906126202ff6248a84921cae6f351260dd3bb527e525e50df68622e63"},
  ["yaml_recipe"] = {"af6766699790ea57348b4e5323b38617a934f76db79180579da145319760b401",
    "55dc7e7d638b9c0019d344e90a42d5ebc8f05f5957f5475ca72d08cedcfee4f4",
    "7dd3dfd6d652ce44ce5e6737a5275cc7acb59f3fe0fa7c84670e8af723f49293"},
}

local QM = llmc.modifiers.QuantizationModifier
local VARIANTS = {
  w4a16_head = function() return QM{targets = "Linear", scheme = "W4A16"} end,   -- lm_head quantized: untied
  custom_groups = function() return [[
default_stage:
  default_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: ["re:.*mlp.*proj$"]
          weights: {num_bits: 4, type: int, symmetric: false, group_size: 64, strategy: group}
        group_1:
          targets: ["re:.*self_attn.*proj$"]
          weights: {num_bits: 8, type: float, strategy: channel}
          input_activations: {num_bits: 8, type: float, strategy: token, dynamic: true}
]] end,
  scheme_dict = function()
    local om = util.omap()
    om:set("W4A16", {"re:.*mlp.*"})
    om:set("FP8_DYNAMIC", {"re:.*self_attn.*"})
    return QM{scheme = om, ignore = {"lm_head"}}
  end,
  w4a16_mse = function() return QM{targets = "Linear", scheme = "W4A16", ignore = {"lm_head"}, weight_observer = "mse"} end,
  yaml_recipe = function() return [[
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: ["lm_head", "re:.*layers.0.mlp.down_proj$"]
      config_groups:
        group_0:
          targets: ["Linear"]
          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}
          input_activations: {num_bits: 8, type: int, symmetric: true, strategy: token, dynamic: true}
]] end,
}

local tmp = string.format("%s/llmc_test_oneshot_%d", os.getenv("TMPDIR") or "/tmp", util.fs.getpid())
util.fs.mkdir_p(tmp)
local names = {}
for k in pairs(LC) do names[#names + 1] = k end
table.sort(names)
local roundtrip_done = 0
for _, name in ipairs(names) do
  local r = VARIANTS[name] and VARIANTS[name]() or QM{targets = "Linear", scheme = name, ignore = {"lm_head"}}
  local out = tmp .. "/" .. name
  local ok, model = pcall(llmc.oneshot, {model = llmc.default_model(), recipe = r, output_dir = out, quiet = true})
  if not ok then check(false, name .. ": oneshot failed: " .. tostring(model)) else
    local want = LC[name]
    check(sha256(out .. "/model.safetensors") == want[1], name .. ": model.safetensors equals llm-compressor's byte for byte")
    check(sha256(out .. "/config.json") == want[2], name .. ": config.json equals llm-compressor's")
    check(sha256(out .. "/recipe.yaml") == want[3], name .. ": recipe.yaml equals llm-compressor's")
    check(util.exists(out .. "/tokenizer.json") and util.exists(out .. "/generation_config.json"), name .. ": tokenizer/generation files copied")
    -- round trip: decompress(written tensors) == fake-quantized weight in memory (values; -0 == +0)
    local deq = llmc.quant.decompress_checkpoint(out)
    local bad, n = 0, 0
    for _, rec in ipairs(model.quantization_summary.records) do
      n = n + 1
      local a = rec.module.weight:to("float32")
      local b = deq[rec.name .. ".weight"]:to("float32")
      if a:ne(b):sum() ~= 0 then bad = bad + 1 end
    end
    check(n > 0 and bad == 0, string.format("%s: %d of %d weights differ between decompress and fake-quant", name, bad, n))
    roundtrip_done = roundtrip_done + 1
    util.fs.rmtree(out)
  end
end
check(roundtrip_done == #names, "all recipes ran")
util.fs.rmtree(tmp)
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)

