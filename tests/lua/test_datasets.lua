--[[
Tests of llmc.datasets: loaders (jsonl/json/csv/txt/folders), presets,
preprocessing, chat rendering, tokenization + truncation, seeded sampling,
concatenation, collation, and the error paths.

Run:  llmc tests/lua/test_datasets.lua
  or  LUA_PATH="lua/?.lua;lua/?/init.lua;;" lua5.4 tests/lua/test_datasets.lua

References are independent of the code under test:
  - the fixture files are re-read here with cjson and tokenized with a fake
    whitespace tokenizer defined below, so the expected samples are computed
    without llmc.datasets;
  - the seeded draws were computed by a separate Python SplitMix64 /
    Fisher-Yates script (the generator documented in process.lua):
        M64 = 2**64 - 1
        def gen(seed):
            s = seed & M64
            while True:
                s = (s + 0x9E3779B97F4A7C15) & M64; z = s
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
                yield z ^ (z >> 31)
        def sample(n, N, seed):
            g = gen(seed)
            def below(m):
                lim = ((1 << 53) // m) * m
                while True:
                    v = next(g) >> 11
                    if v < lim: return v % m
            idx = list(range(1, n + 1))
            for i in range(N):
                j = i + below(n - i); idx[i], idx[j] = idx[j], idx[i]
            return idx[:N]
  - the mistral token ids and the rendered chat text come from Hugging Face
    transformers 5.23 / tokenizers 0.23.3 (AutoTokenizer on
    fixtures/tokenizers/mistral; tok(text, max_length=32, truncation=True);
    apply_chat_template with llm-compressor's fallback template).
]]
local datasets = require "llmc.datasets"
local cjson = require "cjson"

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1 else failed = failed + 1; print("FAIL: " .. msg) end
end
local function eq_list(a, b)
  if type(a) ~= "table" or type(b) ~= "table" or #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
local function show(t) return type(t) == "table" and "{" .. table.concat(t, ",") .. "}" or tostring(t) end
local function check_list(got, want, msg)
  check(eq_list(got, want), msg .. ": got " .. show(got) .. ", want " .. show(want))
end
local function raises(pattern, fn, msg)
  local ok, err = pcall(fn)
  check(not ok and tostring(err):find(pattern, 1, true) ~= nil,
    msg .. ": expected an error containing '" .. pattern .. "', got " .. (ok and "no error" or tostring(err)))
end

-- Fixtures: $LLMC_BUNDLED, else $LLMC_ROOT/fixtures, else <this script>/../../fixtures.
local bundled = os.getenv("LLMC_BUNDLED")
if (not bundled or bundled == "") and (os.getenv("LLMC_ROOT") or "") ~= "" then
  bundled = os.getenv("LLMC_ROOT") .. "/fixtures"
end
if not bundled or bundled == "" then
  local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
  bundled = dir .. "/../../fixtures"
end
local TEXT = bundled .. "/datasets/calib_text.jsonl"
local INSTRUCT = bundled .. "/datasets/calib_instruct.jsonl"
local CHAT = bundled .. "/datasets/calib_chat.jsonl"

local function read_jsonl(path)
  local rows = {}
  for line in io.lines(path) do rows[#rows + 1] = cjson.decode(line) end
  return rows
end
local text_rows = read_jsonl(TEXT)
local instruct_rows = read_jsonl(INSTRUCT)

-- Fake tokenizer: whitespace words, ids from a growing vocab; BOS = 1 (and
-- EOS = 2 appended when add_eos).  No pad token: pad falls back to eos.
local function fake_tokenizer(add_eos)
  local vocab, nextid = {}, 10
  local tok = { eos_token_id = 2, eos_token = "</s>", bos_token = "<s>" }
  function tok:encode(text, opts)
    local ids = {}
    local special = opts == nil or opts.add_special_tokens ~= false
    if special then ids[1] = 1 end
    for w in text:gmatch("%S+") do
      if not vocab[w] then vocab[w] = nextid; nextid = nextid + 1 end
      ids[#ids + 1] = vocab[w]
    end
    if special and add_eos then ids[#ids + 1] = 2 end
    return ids
  end
  return tok
end
local tok = fake_tokenizer(false)
local function words(s) local n = 0; for _ in s:gmatch("%S+") do n = n + 1 end; return n end

local warnings = {}
local function quiet(msg) warnings[#warnings + 1] = msg end

-- Scratch folder for the file-format tests.
local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "'"))
local function write(name, content)
  local f = assert(io.open(tmp .. "/" .. name, "wb"))
  f:write(content)
  f:close()
  return tmp .. "/" .. name
end

---------------------------------------------------------------------------
-- 1. Seeded sampling: the documented generator, against the Python reference
---------------------------------------------------------------------------
do
  local P = datasets.process
  local r = P.rng(0)
  check(r:next64() == math.tointeger(0xe220a8397b1dcdaf) and r:next64() == 0x6e789e6aa1b965f4,
    "SplitMix64(0) first outputs are the published test vector")
  check_list(P.sample_indices(512, 8, true, 42), { 366, 313, 356, 392, 373, 279, 94, 187 }, "draw 8 of 512, seed 42")
  check_list(P.sample_indices(10, 10, true, 7), { 10, 9, 8, 2, 7, 3, 4, 1, 5, 6 }, "permutation of 10, seed 7")
  check_list(P.sample_indices(256, 5, true, -1), { 166, 169, 11, 241, 246 }, "draw 5 of 256, seed -1")
  check_list(P.sample_indices(5, 3, false, nil, { 4, 9, 4, 9, 1 }), { 2, 4, 1 }, "length-aware: longest first, ties in row order")
end

---------------------------------------------------------------------------
-- 2. calib_text.jsonl: shuffle, tokenization, truncation, batches
---------------------------------------------------------------------------
do
  warnings = {}
  local ds = datasets.load{ path = TEXT, tokenizer = tok, num_calibration_samples = 8,
    max_seq_length = 64, shuffle = true, seed = 42, warn = quiet }
  local want = { 366, 313, 356, 392, 373, 279, 94, 187 }
  check(#ds == 8, "#ds == 8, got " .. #ds)
  local ntrunc = 0
  for k, row in ipairs(want) do
    local text = text_rows[row].text
    local s = ds[k]
    check(s.text == text, "sample " .. k .. " is row " .. row)
    local full = tok:encode(text, { add_special_tokens = true })
    local n = math.min(#full, 64)
    if #full > 64 then ntrunc = ntrunc + 1 end
    check_list(s.input_ids, table.move(full, 1, n, 1, {}), "sample " .. k .. " ids = first 64 of BOS + words")
    check(#s.attention_mask == n and s.attention_mask[n] == 1, "sample " .. k .. " mask all ones, length " .. n)
    check(s.source == TEXT .. ":" .. row, "sample " .. k .. " source " .. tostring(s.source))
  end
  check(ds.num_truncated == ntrunc, "num_truncated " .. ds.num_truncated .. " == " .. ntrunc)
  check(#warnings == 1 and warnings[1]:find("truncated", 1, true), "one truncation warning")
  local texts = ds:texts()
  check(#texts == 8 and texts[3] == text_rows[356].text, "texts() in sample order")

  -- same seed, same draw; another seed, another draw
  local ds2 = datasets.load{ path = TEXT, tokenizer = tok, num_calibration_samples = 8, max_seq_length = 64, seed = 42, warn = quiet }
  local ds3 = datasets.load{ path = TEXT, tokenizer = tok, num_calibration_samples = 8, max_seq_length = 64, seed = 43, warn = quiet }
  check(ds2[1].text == ds[1].text and ds2[8].text == ds[8].text, "seed 42 reproduces the draw")
  check(ds3[1].text ~= ds[1].text, "seed 43 draws differently")

  -- default collator "truncation": every row cut to the batch's shortest
  local lens = {}
  for k = 1, 8 do lens[k] = #ds[k].input_ids end
  local nb, sizes = 0, {}
  for b in ds:batches(3) do
    nb = nb + 1
    sizes[nb] = #b.input_ids
    local lo = math.huge
    for k = (nb - 1) * 3 + 1, math.min(nb * 3, 8) do lo = math.min(lo, lens[k]) end
    for r = 1, #b.input_ids do
      check(#b.input_ids[r] == lo and #b.attention_mask[r] == lo, "truncation collator: batch " .. nb .. " row " .. r .. " length " .. lo)
      check(b.input_ids[r][lo] == ds[(nb - 1) * 3 + r].input_ids[lo], "truncation collator keeps the prefix")
    end
  end
  check_list(sizes, { 3, 3, 2 }, "batch sizes for 8 samples by 3")

  -- padding collator: right padding with pad_id, mask 0
  for b in ds:batches(8, { pad_id = 0 }) do
    local hi = 0
    for k = 1, 8 do hi = math.max(hi, lens[k]) end
    for r = 1, 8 do
      local row, m = b.input_ids[r], b.attention_mask[r]
      check(#row == hi and #m == hi, "padding collator: row " .. r .. " padded to " .. hi)
      check(row[lens[r]] == ds[r].input_ids[lens[r]] and m[lens[r]] == 1, "padding collator keeps the row")
      if lens[r] < hi then
        check(row[lens[r] + 1] == 0 and row[hi] == 0 and m[lens[r] + 1] == 0 and m[hi] == 0,
          "padding collator: pad id 0, mask 0 after row " .. r)
      end
    end
  end
  -- pad id defaults to eos (upstream sets pad := eos when missing)
  local b = ds:batches(8, { data_collator = "padding" })()
  local shortest = 1
  for k = 1, 8 do if lens[k] < lens[shortest] then shortest = k end end
  check(ds.pad_id == 2 and b.input_ids[shortest][#b.input_ids[shortest]] == 2, "padding defaults to the eos id")
end

---------------------------------------------------------------------------
-- 3. shuffle = false: the longest rows (by tokens after truncation)
---------------------------------------------------------------------------
do
  local ds = datasets.load{ path = TEXT, tokenizer = tok, num_calibration_samples = 5,
    shuffle_calibration_samples = false, warn = quiet }
  local order = {}
  for i = 1, #text_rows do order[i] = i end
  local len = {}
  for i, r in ipairs(text_rows) do len[i] = words(r.text) + 1 end
  table.sort(order, function(a, b) if len[a] ~= len[b] then return len[a] > len[b] end return a < b end)
  for k = 1, 5 do check(ds[k].text == text_rows[order[k]].text, "length-aware sample " .. k .. " is row " .. order[k]) end
  check(#ds[1].input_ids == len[order[1]], "no max_seq_length and no model_max_length: no truncation")

  -- model_max_length caps max_seq_length, with a warning
  warnings = {}
  local t2 = fake_tokenizer(false)
  t2.model_max_length = 16
  local ds2 = datasets.load{ path = TEXT, tokenizer = t2, num_calibration_samples = 2, max_seq_length = 100, warn = quiet }
  check(ds2.max_seq_length == 16 and #ds2[1].input_ids == 16, "max_seq_length capped by model_max_length")
  check(warnings[1] and warnings[1]:find("model_max_length", 1, true), "warning about model_max_length")
  -- a huge model_max_length (HF's 1e30) means no limit
  local t3 = fake_tokenizer(false)
  t3.model_max_length = 1e30
  local ds3 = datasets.load{ path = TEXT, tokenizer = t3, num_calibration_samples = 1, shuffle = false, warn = quiet }
  check(ds3.max_seq_length == nil and #ds3[1].input_ids == len[order[1]], "model_max_length 1e30 = no limit")
end

---------------------------------------------------------------------------
-- 4. Truncation keeps special tokens (HF); pad_to_max_length
---------------------------------------------------------------------------
do
  local t = fake_tokenizer(true)
  local ds = datasets.load{ data = { "a b c d e f g h", "x y" }, tokenizer = t, max_seq_length = 5,
    shuffle = false, pad_to_max_length = true, warn = quiet }
  local ids = t:encode("a b c d e f g h", { add_special_tokens = false })
  check_list(ds[1].input_ids, { 1, ids[1], ids[2], ids[3], 2 }, "truncation: BOS + 3 words + EOS")
  check_list(ds[1].attention_mask, { 1, 1, 1, 1, 1 }, "truncated mask")
  local xy = t:encode("x y", { add_special_tokens = false })
  check_list(ds[2].input_ids, { 1, xy[1], xy[2], 2, 2 }, "pad_to_max_length pads with pad id (= eos 2)")
  check_list(ds[2].attention_mask, { 1, 1, 1, 1, 0 }, "pad_to_max_length mask")
  check(ds.num_truncated == 1, "one sample truncated")
  local ds2 = datasets.load{ data = { "a b c d e f" }, tokenizer = t, max_seq_length = 3, add_special_tokens = false, warn = quiet }
  check(#ds2[1].input_ids == 3 and ds2[1].input_ids[1] == ids[1], "add_special_tokens = false: plain cut")
end

---------------------------------------------------------------------------
-- 5. Presets
---------------------------------------------------------------------------
do
  local ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n"
  local ALPACA_IN = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
  local ds = datasets.load{ name = "open_platypus", path = INSTRUCT, split = "train[:3]", shuffle = false,
    tokenizer = tok, warn = quiet }
  check(#ds == 3 and ds.num_rows == 3, "split train[:3] gives 3 rows")
  local r1 = instruct_rows[1]
  local want1 = ALPACA .. r1.instruction .. "\n\n### Response:\n" .. r1.output
  local found = false
  for k = 1, 3 do if ds[k].text == want1 then found = true end end
  check(found, "open_platypus: Alpaca template without input")
  local d2 = datasets.load{ name = "Open-Platypus", data = { { instruction = "I", input = "X", output = "O" } }, warn = quiet }
  check(d2[1].text == ALPACA_IN .. "I\n\n### Input:\nX\n\n### Response:\nO", "open_platypus: template with input; name normalised")
  check(d2[1].input_ids == nil, "no tokenizer: text only")

  local g = datasets.load{ name = "gsm8k", data = { { question = "2+2?", answer = "4" }, { question = "q" } }, shuffle = false, warn = quiet }
  check(g[1].text == "Question: 2+2?\nAnswer: 4" and g[2].text == "Question: q\nAnswer:", "gsm8k template")
  local c = datasets.load{ name = "cnn_dailymail", data = { { article = "A", highlights = "H" } }, warn = quiet }
  check(c[1].text == "Article:\nA\n\n### Summarization:\nH\n", "cnn_dailymail template")
  local EVOL = "Below is an instruction that describes a programming task. Write a program that appropriately completes the request.\n\n### Instruction:\n"
  local e = datasets.load{ name = "evolcodealpaca", shuffle = false, warn = quiet,
    data = { { instruction = "sum a list", output = "def f(x): return sum(x)" }, { instruction = "print the output", output = "print(1)" } } }
  -- no tokenizer: shuffle = false orders by text length (bytes), longest first
  check(e[2].text == EVOL .. "sum a list\n\n### Response:\n", "evolcodealpaca: output dropped (upstream bug mirrored)")
  check(e[1].text == EVOL .. "print the output\n\n### Response:\nprint(1)", "evolcodealpaca: output kept when 'output' is in the prompt")
  local w = datasets.load{ name = "wikitext", data = { { text = "Hello" } }, warn = quiet }
  check(w[1].text == "Hello", "wikitext: no template")

  -- a user preprocess replaces the preset's template
  local p = datasets.load{ name = "open_platypus", path = INSTRUCT, num_calibration_samples = 2, warn = quiet,
    preprocess = function(row) return { text = row.instruction .. " => " .. row.output } end }
  check(p[1].text:find(" => ", 1, true) ~= nil and not p[1].text:find("Below is", 1, true), "preprocess replaces the template")

  raises("not supported", function() datasets.load{ name = "flickr30k", data = { "x" } } end, "multimodal preset")
  raises("unknown dataset preset 'nope'", function() datasets.load{ name = "nope", data = { "x" } } end, "unknown preset")
  raises("no field 'instruction'", function() datasets.load{ name = "open_platypus", path = CHAT, warn = quiet } end, "preset missing field")
  raises(CHAT .. ":1", function() datasets.load{ name = "open_platypus", path = CHAT, warn = quiet } end, "preset error names file:line")
  local names = table.concat(datasets.names(), " ")
  check(names:find("ultrachat_200k", 1, true) and names:find("c4", 1, true) and names:find("evolcodealpaca", 1, true), "names() lists presets")
end

---------------------------------------------------------------------------
-- 6. Chat messages
---------------------------------------------------------------------------
do
  local function lua_template(msgs, opts)
    local t = {}
    for _, m in ipairs(msgs) do t[#t + 1] = "[" .. m.role .. "]" .. m.content .. (opts.eos_token or "") end
    return table.concat(t)
  end
  local chat_rows = read_jsonl(CHAT)
  local ds = datasets.load{ name = "ultrachat", path = CHAT, split = "train", chat_template = lua_template,
    tokenizer = tok, num_calibration_samples = 3, seed = 42, warn = quiet }
  local want_rows = { 110, 41, 240 }   -- Python reference: sample(256, 3, 42)
  local P = datasets.process
  check_list(P.sample_indices(256, 3, true, 42), want_rows, "draw 3 of 256, seed 42")
  local m = chat_rows[want_rows[1]].messages
  check(ds[1].text == "[system]</s>[user]" .. m[1].content .. "</s>[assistant]" .. m[2].content .. "</s>",
    "ultrachat: empty system message first, Lua chat template")
  local pb = datasets.load{ name = "perfectblend", chat_template = lua_template, tokenizer_config = { eos_token = "|" },
    data = { { conversations = { { from = "human", value = "hi" }, { from = "gpt", value = "yo" } } } }, warn = quiet }
  check(pb[1].text == "[user]hi|[assistant]yo|", "perfectblend: human/gpt -> user/assistant")
  -- a message list in a plain file is rendered too (text_column names it)
  local c = datasets.load{ path = CHAT, text_column = "messages", chat_template = lua_template, num_calibration_samples = 1, warn = quiet }
  check(c[1].text:sub(1, 6) == "[user]", "messages column rendered with the chat template")

  local okc, chat = pcall(require, "llmc.chat")
  if okc then
    warnings = {}
    local u = datasets.load{ name = "ultrachat_200k", tokenizer_config = { eos_token = "</s>" }, warn = quiet,
      data = { { messages = { { role = "user", content = "Hi there" }, { role = "assistant", content = "Hello!" } } } } }
    check(u[1].text == "<|system|>\n</s>\n<|user|>\nHi there</s>\n<|assistant|>\nHello!</s>\n",
      "ultrachat fallback template rendered by llmc.chat equals transformers' output: " .. string.format("%q", u[1].text))
    check(warnings[1] and warnings[1]:find("default chat template", 1, true), "warning on the fallback template")
  else
    print("SKIP: llmc.chat not available (" .. tostring(chat):match("^[^\n]*") .. "): Jinja chat template checks")
  end
end

---------------------------------------------------------------------------
-- 7. File formats
---------------------------------------------------------------------------
do
  local L = datasets.loaders
  -- JSON array of objects, of strings, and {"data": [...]} with field
  local arr = write("arr.json", '[\n {"text": "one"},\n {"text": "two", "x": 1}\n]\n')
  local rows, src = L.read_file(arr)
  check(#rows == 2 and rows[2].text == "two" and src[2]:find("element 2", 1, true), "JSON array of objects")
  rows = L.read_file(write("strs.json", '["a", "b", "c"]'))
  check(#rows == 3 and rows[3].text == "c", "JSON array of strings -> text rows")
  local doc = write("doc.json", '{"version": 1,\n "data": [{"text": "d1"}, {"text": "d2"}]\n}\n')
  local ds = datasets.load{ path = doc, field = "data", shuffle = false, warn = quiet }
  check(#ds == 2 and ds[1].text == "d1", "field = 'data' reads document.data")
  local ds2 = datasets.load{ path = doc, raw_kwargs = { field = "data" }, shuffle = false, warn = quiet }
  check(#ds2 == 2, "raw_kwargs.field as upstream passes it")
  raises("pass field", function() L.read_file(doc) end, "multi-line document without field")
  -- JSON lines with blank lines and CRLF
  rows, src = L.read_file(write("crlf.jsonl", '{"text": "a"}\r\n\r\n{"text": "b"}\r\n'))
  check(#rows == 2 and rows[2].text == "b" and src[2]:sub(-2) == ":3", "jsonl: blank line skipped, CRLF, line numbers")

  -- CSV (RFC 4180)
  local csv = write("d.csv", 'id,text,note\r\n1,"hello, ""world""\nsecond line",x\r\n\r\n2,plain,\n3,"last"')
  rows, src = L.read_file(csv)
  check(#rows == 3, "csv: 3 records (blank line skipped), got " .. #rows)
  check(rows[1].text == 'hello, "world"\nsecond line' and rows[1].note == "x", "csv: quoted field with comma, quotes, newline")
  check(rows[2].text == "plain" and rows[2].note == "" and rows[3].text == "last" and rows[3].note == nil, "csv: empty and absent fields")
  check(src[2] == csv .. ":5" and src[3] == csv .. ":6", "csv: record start lines " .. tostring(src[2]) .. " " .. tostring(src[3]))
  local tsv = write("d.tsv", "text\tlabel\na b\t1\n")
  rows = L.read_file(tsv)
  check(rows[1].text == "a b" and rows[1].label == "1", "tsv")
  raises("bad.csv:2: unterminated quoted field", function() L.read_file(write("bad.csv", 'text\n"abc\nmore\n')) end, "csv unterminated quote")
  raises("wide.csv:3: 3 fields, but the header has 2", function() L.read_file(write("wide.csv", "a,text\n1,x\n1,2,3\n")) end, "csv too many fields")

  -- text: lines (empty kept), paragraphs, document
  local txt = write("t.txt", "first line\r\n\nthird\n\n\nsixth\n")
  rows = L.read_file(txt)
  check(#rows == 6 and rows[1].text == "first line" and rows[2].text == "" and rows[6].text == "sixth", "txt by line: empty lines kept, CRLF dropped")
  rows = L.read_file(txt, { sample_by = "paragraph" })
  check(#rows == 3 and rows[1].text == "first line" and rows[2].text == "third" and rows[3].text == "\nsixth\n", "txt by paragraph (HF split on \\n\\n)")
  rows = L.read_file(txt, { sample_by = "document" })
  check(#rows == 1 and rows[1].text == "first line\n\nthird\n\n\nsixth\n", "txt whole document")
  rows = L.read_file(txt, { keep_linebreaks = true })
  check(rows[1].text == "first line\n", "txt keep_linebreaks")
  -- an empty line tokenizes to BOS alone (as upstream); with no specials it is an error
  local t = datasets.load{ path = txt, tokenizer = tok, shuffle = false, warn = quiet }
  check(#t == 6 and #t[6].input_ids == 1, "empty line = BOS only")
  raises("t.txt:2: the text tokenizes to 0 tokens", function()
    datasets.load{ path = txt, tokenizer = tok, add_special_tokens = false, shuffle = false, warn = quiet } end, "0-token sample")
  local kept = datasets.load{ path = txt, tokenizer = tok, add_special_tokens = false, shuffle = false, warn = quiet,
    preprocess = function(r) return r.text ~= "" and r end }
  check(#kept == 3, "preprocess returning false drops rows")

  -- folders: files -> splits named by stem, train/val/test renaming
  assert(os.execute("mkdir -p '" .. tmp .. "/dir1' '" .. tmp .. "/dir2/train' '" .. tmp .. "/dir2/eval'"))
  write("dir1/my_train_data.jsonl", '{"text": "t1"}\n{"text": "t2"}\n')
  write("dir1/validation.csv", 'text\nv1\n')
  write("dir1/notes.md", "ignored")
  local d = datasets.load{ path = tmp .. "/dir1", shuffle = false, warn = quiet }
  check(#d == 2 and d.split == "train" and d[1].text == "t1", "folder: my_train_data -> split train (default)")
  local v = datasets.load{ path = tmp .. "/dir1", split = "val", warn = quiet }
  check(#v == 1 and v[1].text == "v1", "folder: validation -> split val")
  write("dir2/train/a.jsonl", '{"text": "a"}\n')
  write("dir2/train/b.txt", "b1\nb2\n")
  write("dir2/eval/c.jsonl", '{"text": "c"}\n')
  local d2 = datasets.load{ path = tmp .. "/dir2", shuffle = false, warn = quiet }
  local t2 = table.concat(d2:texts(), " ")
  check(#d2 == 3 and t2 == "b1 b2 a", "folder of sub-folders: split train = its files (longest first), got " .. t2)
  -- upstream's renaming is by substring: "eval" contains "val"
  local d3 = datasets.load{ path = tmp .. "/dir2", split = "val", warn = quiet }
  check(#d3 == 1 and d3[1].text == "c", "sub-folder eval -> split val")
  raises("unknown split \"test\" (available: train, val)", function() datasets.load{ path = tmp .. "/dir2", split = "test" } end, "unknown split")
  local multi = datasets.load{ path = { tmp .. "/arr.json", tmp .. "/strs.json" }, shuffle = false, warn = quiet }
  check(#multi == 5, "list of files -> one split")

  -- split slicing (HF syntax; percents round half to even)
  local s1 = datasets.load{ path = TEXT, split = "train[:10%]", shuffle = false, warn = quiet }
  check(s1.num_rows == 51, "train[:10%] of 512 = 51 rows, got " .. s1.num_rows)
  local s2 = datasets.load{ path = TEXT, split = "train[-2:]", shuffle = false, warn = quiet }
  check(s2.num_rows == 2 and (s2[1].text == text_rows[511].text or s2[1].text == text_rows[512].text), "train[-2:]")
  local s3 = datasets.load{ path = TEXT, splits = { calibration = "train[5:7]" }, shuffle = false, warn = quiet }
  check(s3.num_rows == 2, "deprecated {calibration = ...} splits form")
end

---------------------------------------------------------------------------
-- 8. Concatenation
---------------------------------------------------------------------------
do
  local ds = datasets.load{ path = TEXT, tokenizer = tok, concatenate_data = true, max_seq_length = 128,
    shuffle = false, num_calibration_samples = 10000, warn = quiet }
  -- upstream tokenizes each row with truncation to max_seq_length first, then packs
  local all = {}
  for _, r in ipairs(text_rows) do
    local ids = tok:encode(r.text, { add_special_tokens = true })
    for k = 1, math.min(#ids, 128) do all[#all + 1] = ids[k] end
  end
  local nchunks = #all // 128
  check(#ds == nchunks, "chunks = floor(total tokens / 128) = " .. nchunks .. ", got " .. #ds)
  check_list(ds[1].input_ids, table.move(all, 1, 128, 1, {}), "chunk 1 = first 128 tokens of the concatenation")
  check_list(ds[nchunks].input_ids, table.move(all, (nchunks - 1) * 128 + 1, nchunks * 128, 1, {}), "last chunk")
  raises("concatenate_data needs max_seq_length", function()
    datasets.load{ path = TEXT, tokenizer = tok, concatenate_data = true, warn = quiet } end, "concatenate without a length")
end

---------------------------------------------------------------------------
-- 9. Bad input
---------------------------------------------------------------------------
do
  raises("is empty (0 rows)", function() datasets.load{ path = write("empty.jsonl", "\n\n") } end, "empty file")
  raises("empty.csv [split train] is empty (0 rows)", function() datasets.load{ path = write("empty.csv", "text\n") } end, "header-only csv")
  local bad = write("bad.jsonl", '{"text": "ok"}\n{"text": "broken"\n{"text": "ok"}\n')
  raises(bad .. ":2: malformed JSON line", function() datasets.load{ path = bad } end, "malformed JSON names file:line")
  local miss = write("miss.jsonl", '{"text": "ok"}\n{"txt": "typo"}\n')
  raises(miss .. ":2: no field 'text'; the row has: txt", function() datasets.load{ path = miss } end, "missing text field")
  raises("no field 'body' (text_column = \"body\")", function() datasets.load{ path = miss, text_column = "body" } end, "missing text_column")
  raises("arrline.jsonl:2: expected a JSON object, got an array", function()
    datasets.load{ path = write("arrline.jsonl", '{"text": "a"}\n[1,2]\n') } end, "non-object line")
  raises("strline.jsonl:1: expected a JSON object, got string", function()
    datasets.load{ path = write("strline.jsonl", '"just a string"\n') } end, "string line")
  raises("field 'text' is number", function() datasets.load{ data = { { text = 5 } } } end, "non-string text")
  raises("unknown option 'num_calib_samples'", function() datasets.load{ path = TEXT, num_calib_samples = 3 } end, "typo in option")
  raises("no such file or folder", function() datasets.load{ path = tmp .. "/nope.jsonl" } end, "missing file")
  raises("unknown data file type", function() datasets.load{ path = write("x.parquet", "PAR1") } end, "unsupported extension")
  raises("num_calibration_samples must be a positive integer", function() datasets.load{ path = TEXT, num_calibration_samples = 0 } end, "zero samples")
  raises("seed must be an integer", function() datasets.load{ path = TEXT, seed = 1.5 } end, "bad seed")
  raises("tokenizer must have an :encode", function() datasets.load{ path = TEXT, tokenizer = {} } end, "bad tokenizer")
  raises("no token ids", function() datasets.load{ path = TEXT, num_calibration_samples = 2, warn = quiet }:batches(1)() end, "batches without tokenizer")
  warnings = {}
  local ds = datasets.load{ path = INSTRUCT, name = "open_platypus", tokenizer = tok, num_calibration_samples = 1000, warn = quiet }
  check(#ds == 256 and warnings[1] and warnings[1]:find("has only 256 rows", 1, true), "num_calibration_samples > rows: clamp + warning")
  local seen, dup = {}, false
  for i = 1, #ds do if seen[ds[i].text] then dup = true end; seen[ds[i].text] = true end
  check(not dup, "shuffled draw without replacement")
  -- pre-tokenized rows are used as they are
  local pre = datasets.load{ data = { { input_ids = { 5, 6, 7 } }, { input_ids = { 8, 9 }, attention_mask = { 1, 0 } } }, shuffle = false, max_seq_length = 2, warn = quiet }
  check_list(pre[1].input_ids, { 5, 6, 7 }, "pre-tokenized rows kept")
  local b = pre:batches(2)()
  check_list(b.input_ids[1], { 5, 6 }, "truncation collator honours max_seq_length")
  check_list(b.attention_mask[2], { 1, 0 }, "pre-tokenized mask kept")
  raises("needs a pad id", function()
    datasets.load{ data = { { input_ids = { 5, 6, 7 } }, { input_ids = { 8 } } }, shuffle = false, warn = quiet }:batches(2, { data_collator = "padding" })()
  end, "padding without a pad id")
end

---------------------------------------------------------------------------
-- 10. The real tokenizer (llmc._tokenizer), if built
---------------------------------------------------------------------------
do
  local okt, T = pcall(require, "llmc._tokenizer")
  local ctor = okt and type(T) == "table" and (T.load or T.from_file or T.new)
  if not ctor then
    print("SKIP: llmc._tokenizer not available: mistral tokenizer checks")
  else
    local mt = ctor(bundled .. "/tokenizers/mistral/tokenizer.json")
    local ds = datasets.load{ path = TEXT, split = "train[:3]", tokenizer = mt, max_seq_length = 32,
      shuffle = false, pad_id = 0, warn = quiet }
    -- all three truncate to 32, so the length sort keeps row order
    check_list(ds[1].input_ids, { 1, 1047, 272, 4908, 1918, 2822, 28713, 302, 264, 5864, 4908, 4291, 1024, 378, 659, 750,
      10248, 304, 15813, 297, 2744, 28714, 28742, 28713, 798, 4291, 3508, 263, 28725, 272, 1918, 622 }, "mistral row 1, 32 tokens")
    check_list(ds[2].input_ids, { 1, 11773, 13883, 356, 272, 8133, 3741, 528, 28723, 387, 28735, 3439, 298, 347, 18216, 496,
      8236, 2598, 297, 19015, 386, 2773, 13, 13, 28737, 2629, 3641, 754, 264, 9697, 369, 403 }, "mistral row 2, 32 tokens")
    check_list(ds[3].input_ids, { 1, 365, 4614, 6991, 11502, 24194, 9363, 326, 1077, 395, 272, 19073, 13, 13, 11600, 5944,
      297, 272, 14843, 1759, 2699, 368, 298, 5870, 1871, 28723, 2957, 18794, 506, 2856, 5020, 369 }, "mistral row 3, 32 tokens")
    local full = datasets.load{ path = TEXT, tokenizer = mt, shuffle = false, num_calibration_samples = 512, warn = quiet }
    check(full:num_tokens() == 113445, "mistral: 113445 tokens over calib_text (HF), got " .. full:num_tokens())
    check(#full[1].input_ids == 537 and #full[512].input_ids == 39, "mistral: longest 537, shortest 39")
    local op = datasets.load{ name = "open_platypus", path = INSTRUCT, split = "train[:1]", tokenizer = mt, max_seq_length = 16, warn = quiet }
    check_list(op[1].input_ids, { 1, 20811, 349, 396, 13126, 369, 13966, 264, 3638, 28723, 12018, 264, 2899, 369, 6582, 1999 },
      "open_platypus row 1 through mistral, 16 tokens")
  end
end

os.execute("rm -rf '" .. tmp .. "'")
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
