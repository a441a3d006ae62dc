--[[
llmc.datasets.loaders — read local data files into rows (Lua tables).

The formats are those of the Hugging Face `datasets` builders that
llm-compressor uses for local data (`load_dataset("json"|"csv"|"text",
data_files=...)`), so the same file gives the same rows:

  .jsonl / .json  one JSON object per line (blank lines skipped).  A file whose
                  first non-blank byte is `[` is one JSON array: of objects
                  (one row each) or of strings (row {text = s}).  With
                  `field = "data"` the file is one JSON document and the rows
                  are document.data (HF's `field` option), e.g. {"data": [...]}.
  .csv / .tsv     RFC 4180: a header row names the columns; fields may be
                  quoted ("a, b", embedded newlines, "" for a quote); CRLF or
                  LF; blank lines skipped; every value is a string (no type
                  guessing); a short record leaves its last columns absent.
  .txt            HF "text" builder: sample_by = "line" (default: one row per
                  line, empty lines kept as "" rows, the line break dropped
                  unless keep_linebreaks), "paragraph" (split on "\n\n",
                  empty pieces dropped) or "document" (the whole file).
                  "\r\n" and "\r" read as "\n" (Python's universal newlines).

Every row has a source "file:line" (the line its record starts on; for a JSON
array, "file: element k"), used by every error message further on.

A folder is read the way llm-compressor's get_custom_datasets_from_path does:
the supported files directly in it become splits named after their stems
(the one stem containing "train", "val" or "test", if just one does, is
renamed to that word); if there are none, each sub-folder (any depth) is a
split holding its files.  A single file, or a list of files, is split "train".

  local L = require "llmc.datasets.loaders"
  local rows, sources = L.read_file("fixtures/datasets/calib_text.jsonl")
  print(#rows, rows[1].text, sources[1])        -- 512  "If the ..."  ".../calib_text.jsonl:1"
  local splits = L.read_path("data/", {})        -- {train = {rows=, sources=, files=}, ...}
  local rows2 = L.select_split(splits, "train[:10%]", "data/")
]]
local cjson = require "cjson"

local M = {}

-- A private cjson instance: settings changed here do not leak into other users.
local json = cjson.new and cjson.new() or cjson

local function fail(fmt, ...)
  error("llmc.datasets: " .. string.format(fmt, ...), 0)
end
M.fail = fail

M.EXTENSIONS = { jsonl = "json", json = "json", csv = "csv", tsv = "csv", txt = "text" }

--- Format ("json", "csv", "text") of a file name, or nil.
function M.format_of(path)
  local ext = path:match("%.([%w]+)$")
  return ext and M.EXTENSIONS[ext:lower()]
end

local function read_all(path)
  local f, err = io.open(path, "rb")
  if not f then fail("cannot open %s: %s", path, err) end
  local data, rerr = f:read("a")
  f:close()
  if not data then fail("cannot read %s: %s", path, tostring(rerr)) end
  if data:sub(1, 3) == "\239\187\191" then data = data:sub(4) end   -- UTF-8 BOM
  return data
end

--- True when `path` names a directory (io.open succeeds on one, reading fails with EISDIR).
function M.is_dir(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok == nil and code == 21
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Entries directly in `dir`: array of {name=, kind="f"|"d"}, sorted by name.
-- Lua has no directory listing of its own; POSIX `find` gives one safely
-- (NUL-separated names, so any byte but NUL and "/" survives).
function M.list_dir(dir)
  local p = io.popen("find " .. shell_quote(dir) ..
    " -mindepth 1 -maxdepth 1 \\( -type f -o -type d \\) -printf '%y/%f\\0' 2>/dev/null")
  if not p then fail("cannot list folder %s", dir) end
  local out = p:read("a") or ""
  p:close()
  local entries = {}
  for kind, name in out:gmatch("([fd])/([^%z]*)%z") do
    if name:sub(1, 1) ~= "." then entries[#entries + 1] = { name = name, kind = kind } end
  end
  table.sort(entries, function(a, b) return a.name < b.name end)
  return entries
end

-- 1-based line number of byte offset `pos` in `data`.
local function line_of(data, pos)
  local n = 1
  for _ in data:sub(1, pos - 1):gmatch("\n") do n = n + 1 end
  return n
end

local function is_array(t)
  return type(t) == "table" and (#t > 0 or next(t) == nil)
end

-- JSON: arrays, JSON lines, or a document's `field`.
local function read_json(path, opts)
  local data = read_all(path)
  if opts.field ~= nil then
    local ok, doc = pcall(json.decode, data)
    if not ok then
      local at = tonumber(tostring(doc):match("character (%d+)"))
      fail("%s:%s: malformed JSON: %s", path, at and line_of(data, at) or "?", tostring(doc))
    end
    if type(doc) ~= "table" or doc[opts.field] == nil then
      fail("%s: field = %q: the document has no such key", path, tostring(opts.field))
    end
    doc = doc[opts.field]
    if not is_array(doc) then fail("%s: field %q is not a JSON array", path, tostring(opts.field)) end
    local rows, src = {}, {}
    for k, v in ipairs(doc) do
      if type(v) == "string" then v = { text = v }
      elseif type(v) ~= "table" or is_array(v) and next(v) ~= nil then
        fail("%s: %s[%d] is not a JSON object", path, opts.field, k)
      end
      rows[k], src[k] = v, string.format("%s: %s[%d]", path, opts.field, k)
    end
    return rows, src
  end

  local first = data:match("^%s*()")
  if data:sub(first, first) == "[" then
    local ok, doc = pcall(json.decode, data)
    if not ok then
      local at = tonumber(tostring(doc):match("character (%d+)"))
      fail("%s:%s: malformed JSON: %s", path, at and line_of(data, at) or "?", tostring(doc))
    end
    local rows, src = {}, {}
    for k, v in ipairs(doc) do
      if type(v) == "string" then v = { text = v }
      elseif type(v) ~= "table" or (is_array(v) and next(v) ~= nil) then
        fail("%s: element %d of the top-level array is not an object or a string", path, k)
      end
      rows[k], src[k] = v, string.format("%s: element %d", path, k)
    end
    return rows, src
  end

  local rows, src = {}, {}
  local lineno, pos, len = 0, 1, #data
  while pos <= len do
    local nl = data:find("\n", pos, true) or len + 1
    local line = data:sub(pos, nl - 1)
    lineno = lineno + 1
    pos = nl + 1
    if line:find("%S") then
      local ok, v = pcall(json.decode, line)
      if not ok then
        -- A pretty-printed single document (e.g. {"data": [...]}) is not JSON lines.
        local whole_ok, doc = pcall(json.decode, data)
        if whole_ok and type(doc) == "table" and not is_array(doc) then
          local keys = {}
          for k in pairs(doc) do keys[#keys + 1] = tostring(k) end
          table.sort(keys)
          fail("%s: one JSON object over several lines, not JSON lines; pass field = \"<key>\" " ..
            "to read the rows under one of its keys (%s)", path, table.concat(keys, ", "))
        end
        fail("%s:%d: malformed JSON line: %s", path, lineno, tostring(v))
      end
      if type(v) ~= "table" or (is_array(v) and next(v) ~= nil) then
        fail("%s:%d: expected a JSON object, got %s", path, lineno,
          type(v) == "table" and "an array" or type(v))
      end
      rows[#rows + 1], src[#src + 1] = v, path .. ":" .. lineno
    end
  end
  return rows, src
end

-- CSV (RFC 4180), single pass over the bytes.
local function read_csv(path, opts)
  local data = read_all(path)
  local sep = opts.delimiter or (path:lower():match("%.tsv$") and "\t" or ",")
  local q = opts.quotechar or '"'
  local len, pos, line = #data, 1, 1
  local records, starts = {}, {}

  local stop_class = "[%" .. sep .. "\r\n]"
  while pos <= len do
    local c = data:sub(pos, pos)
    if c == "\n" or c == "\r" then                 -- blank line: pandas skips them
      if c == "\r" and data:sub(pos + 1, pos + 1) == "\n" then pos = pos + 1 end
      pos, line = pos + 1, line + 1
      goto continue
    end
    local rec, rec_line = {}, line
    while true do                                   -- one field per iteration
      local field
      if data:sub(pos, pos) == q then
        local parts, p, open_line = {}, pos + 1, line
        while true do
          local qi = data:find(q, p, true)
          if not qi then fail("%s:%d: unterminated quoted field", path, open_line) end
          local chunk = data:sub(p, qi - 1)
          for _ in chunk:gmatch("\n") do line = line + 1 end
          parts[#parts + 1] = chunk
          if data:sub(qi + 1, qi + 1) == q then      -- "" is a literal quote
            parts[#parts + 1] = q
            p = qi + 2
          else
            p = qi + 1
            break
          end
        end
        field = table.concat(parts)
        pos = p
        local nc = data:sub(pos, pos)
        if nc ~= sep and nc ~= "\n" and nc ~= "\r" and nc ~= "" then
          fail("%s:%d: unexpected character %q after a closing quote", path, line, nc)
        end
      else
        local e = data:find(stop_class, pos) or len + 1
        field = data:sub(pos, e - 1)
        pos = e
      end
      rec[#rec + 1] = field
      local nc = data:sub(pos, pos)
      if nc == sep then
        pos = pos + 1
      else                                           -- end of record (or of file)
        if nc == "\r" then pos = pos + 1 end
        if data:sub(pos, pos) == "\n" then pos = pos + 1 end
        if nc ~= "" then line = line + 1 end
        break
      end
    end
    records[#records + 1], starts[#starts + 1] = rec, rec_line
    ::continue::
  end

  if #records == 0 then return {}, {} end
  local header = records[1]
  local seen = {}
  for i, h in ipairs(header) do
    if seen[h] then fail("%s:%d: column %q appears twice in the header", path, starts[1], h) end
    seen[h] = i
  end
  local rows, src = {}, {}
  for r = 2, #records do
    local rec = records[r]
    if #rec > #header then
      fail("%s:%d: %d fields, but the header has %d columns", path, starts[r], #rec, #header)
    end
    local row = {}
    for i = 1, #rec do row[header[i]] = rec[i] end
    rows[#rows + 1], src[#src + 1] = row, path .. ":" .. starts[r]
  end
  return rows, src
end

-- Plain text, as the HF "text" builder reads it.
local function read_text(path, opts)
  local data = read_all(path):gsub("\r\n?", "\n")
  local by = opts.sample_by or "line"
  local rows, src = {}, {}
  if by == "document" then
    rows[1], src[1] = { text = data }, path .. ":1"
  elseif by == "line" then
    local keep = opts.keep_linebreaks
    local pos, lineno, len = 1, 0, #data
    while pos <= len do
      local nl = data:find("\n", pos, true)
      local stop = nl or len
      lineno = lineno + 1
      local text = data:sub(pos, keep and stop or (nl and nl - 1 or len))
      rows[#rows + 1], src[#src + 1] = { text = text }, path .. ":" .. lineno
      pos = stop + 1
    end
  elseif by == "paragraph" then
    local pos, lineno, len = 1, 1, #data
    while pos <= len do
      local s = data:find("\n\n", pos, true)
      local piece = data:sub(pos, (s or len + 1) - 1)
      if piece ~= "" then rows[#rows + 1], src[#src + 1] = { text = piece }, path .. ":" .. lineno end
      for _ in piece:gmatch("\n") do lineno = lineno + 1 end
      if not s then break end
      lineno = lineno + 2
      pos = s + 2
    end
  else
    fail("sample_by = %q: expected \"line\", \"paragraph\" or \"document\"", tostring(by))
  end
  return rows, src
end

local readers = { json = read_json, csv = read_csv, text = read_text }

--- Read one file.  opts: format ("json"|"csv"|"text", default from the
-- extension), field, sample_by, keep_linebreaks, delimiter, quotechar.
-- Returns rows, sources.
function M.read_file(path, opts)
  opts = opts or {}
  local fmt = opts.format or M.format_of(path)
  if fmt == "jsonl" then fmt = "json" elseif fmt == "txt" then fmt = "text" end
  local reader = fmt and readers[fmt]
  if not reader then
    fail("%s: unknown data file type (expected .jsonl, .json, .csv, .tsv or .txt, or pass format = ...)", path)
  end
  return reader(path, opts)
end

-- The split renaming of llm-compressor's transform_dataset_keys.
local function rename_splits(splits)
  local keys = {}
  for k in pairs(splits) do keys[#keys + 1] = k end
  for _, cand in ipairs({ "train", "val", "test" }) do
    local hits = {}
    for _, k in ipairs(keys) do if k:find(cand, 1, true) then hits[#hits + 1] = k end end
    if #hits == 1 and hits[1] ~= cand and splits[hits[1]] then
      splits[cand], splits[hits[1]] = splits[hits[1]], nil
    end
  end
  return splits
end

local function wanted(name, opts)
  local fmt = M.format_of(name)
  if not fmt then return false end
  return opts.format == nil or opts.format == fmt
    or (opts.format == "jsonl" and fmt == "json") or (opts.format == "txt" and fmt == "text")
end

-- Folder -> {split = {files...}}
local function scan_dir(dir, opts)
  local splits = {}
  for _, e in ipairs(M.list_dir(dir)) do
    if e.kind == "f" and wanted(e.name, opts) then
      local stem = e.name:gsub("%.[^.]*$", "")
      splits[stem] = splits[stem] or {}
      table.insert(splits[stem], dir .. "/" .. e.name)
    end
  end
  if next(splits) then return rename_splits(splits) end
  local function walk(d)
    for _, e in ipairs(M.list_dir(d)) do
      if e.kind == "d" then
        local sub = d .. "/" .. e.name
        for _, f in ipairs(M.list_dir(sub)) do
          if f.kind == "f" and wanted(f.name, opts) then
            splits[e.name] = splits[e.name] or {}
            table.insert(splits[e.name], sub .. "/" .. f.name)
          end
        end
        walk(sub)
      end
    end
  end
  walk(dir)
  return rename_splits(splits)
end

--- Read a file, a list of files, or a folder into splits:
-- {name = {rows=, sources=, files=}}.  Files are only read on select_split.
function M.read_path(path, opts)
  opts = opts or {}
  local files
  if type(path) == "table" then
    files = { train = path }
  elseif type(path) ~= "string" or path == "" then
    fail("path must be a file, a folder or a list of files (got %s)", type(path))
  elseif M.is_dir(path) then
    files = scan_dir(path:gsub("/+$", ""), opts)
    if not next(files) then
      fail("%s: folder holds no .jsonl, .json, .csv, .tsv or .txt files", path)
    end
  else
    local f = io.open(path, "rb")
    if not f then fail("%s: no such file or folder", path) end
    f:close()
    files = { train = { path } }
  end
  return files
end

-- Python's round(): half to even.
local function round_half_even(x)
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
  return math.tointeger(f) or f
end

-- "train", "train[:10]", "train[5:]", "train[-20:]", "train[:5%]" (HF split syntax).
local function parse_split(s)
  local name, body = s:match("^%s*([%w_%-%.]+)%s*%[(.*)%]%s*$")
  if not name then
    name = s:match("^%s*([%w_%-%.]+)%s*$")
    if not name then fail("split %q: expected NAME or NAME[from:to] (from/to integers or percents)", s) end
    return name
  end
  local a, b = body:match("^%s*([^:]*)%s*:%s*([^:]*)%s*$")
  if not a then fail("split %q: expected NAME[from:to]", s) end
  local function bound(x)
    if x == "" then return nil end
    local n, pct = x:match("^(%-?%d+)%s*(%%?)$")
    if not n then fail("split %q: bad bound %q", s, x) end
    n = tonumber(n)
    if pct == "%" and (n < -100 or n > 100) then fail("split %q: percent out of range", s) end
    return { n = n, pct = pct == "%" }
  end
  return name, bound(a), bound(b)
end

local function abs_bound(b, n, default)
  if not b then return default end
  local v = b.pct and round_half_even(b.n * n / 100) or b.n
  if v < 0 then v = n + v end
  return math.max(0, math.min(n, v))
end

--- Rows of one split.  `split` may carry a slice ("train[:5%]"); nil picks
-- the only split, else "train" (else `default`).  Returns rows, sources, name.
function M.select_split(splits, split, what, opts, default)
  opts = opts or {}
  local names = {}
  for k in pairs(splits) do names[#names + 1] = k end
  table.sort(names)
  local name, from, to
  if split == nil then
    name = #names == 1 and names[1] or (splits.train and "train") or (default and splits[default] and default)
    if not name then
      fail("%s has splits %s: pass split = \"<name>\"", what, table.concat(names, ", "))
    end
  else
    name, from, to = parse_split(split)
  end
  if not splits[name] then
    fail("%s: unknown split %q (available: %s)", what, name, table.concat(names, ", "))
  end
  local rows, src = {}, {}
  for _, file in ipairs(splits[name]) do
    local r, s = M.read_file(file, opts)
    for i = 1, #r do rows[#rows + 1], src[#src + 1] = r[i], s[i] end
  end
  if from or to then
    local n = #rows
    local lo, hi = abs_bound(from, n, 0), abs_bound(to, n, n)
    local r2, s2 = {}, {}
    for i = lo + 1, hi do r2[#r2 + 1], s2[#s2 + 1] = rows[i], src[i] end
    rows, src = r2, s2
  end
  return rows, src, name
end

return M
