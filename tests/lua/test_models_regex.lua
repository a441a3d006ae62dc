-- llmc._regex (PCRE2) as used by `re:` module patterns: Python re.fullmatch /
-- re.search semantics on the cases llm-compressor recipes use, and the documented
-- corner cases (expected values are what CPython 3.11's re module returns).

local R = require "llmc._regex"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. tostring(detail)) or ""))
  end
end

-- {pattern, subject, re.fullmatch(...) is not None}
local cases = {
  {".*(q|k|v)_proj$", "model.layers.0.self_attn.q_proj", true},
  {".*(q|k|v)_proj$", "model.layers.0.self_attn.o_proj", false},
  {".*mlp.gate$", "model.layers.3.mlp.gate", true},
  {".*mlp.gate$", "model.layers.3.mlp.gate_proj", false},
  {".*mlp\\.experts\\.\\d+\\.down_proj", "model.layers.1.mlp.experts.17.down_proj", true},
  {"lm_head", "lm_head", true},
  {"lm_head", "model.lm_head", false},             -- fullmatch anchors at the start too
  {"q_proj", "model.layers.0.self_attn.q_proj", false},
  {"a|ab", "ab", true},                           -- backtracks into the second alternative
  {"(a+)+b", "aaab", true},
  {"x$", "x\n", false},                           -- $ may match before the final newline, but a
                                                  -- full match must still reach the end (Python too)
  {"(?i)LM_HEAD", "lm_head", true},
  {"\\w+", "ünïcode", true},                      -- Unicode \w, as Python 3 str patterns
  {"\\d+", "١٢٣", true},                          -- Unicode digits (Arabic-Indic), as Python
  {"(?P<n>layers)\\.(?P=n)", "layers.layers", true},
}
for _, c in ipairs(cases) do
  local got = R.fullmatch(c[1], c[2])
  check(got == c[3], string.format("fullmatch(%q, %q) == %s", c[1], c[2], tostring(c[3])), tostring(got))
end
-- documented differences from Python (docs/models.md): PCRE2's \Z also matches
-- before a final newline (Python: only at the very end), and POSIX classes
-- [[:alpha:]] exist (Python reads them as a plain set)
check(R.search("x\\Z", "x\n") ~= nil, "PCRE2 \\Z matches before a final newline (Python's does not)")
check(R.fullmatch("[[:alpha:]]+", "abc") == true, "POSIX class supported (Python: no match)")

-- search: 1-based inclusive positions (string.find style) and captures
local s, e, caps = R.search("layers\\.(\\d+)\\.", "model.layers.12.mlp")
check(s == 7 and e == 16 and caps[1] == "12", "search positions and capture", tostring(s) .. " " .. tostring(e))
check(R.search("zzz", "model") == nil, "search without a match returns nil")
local _, _, c2 = R.search("(a)|(b)", "b")
check(c2[1] == false and c2[2] == "b", "a group that did not take part is false")
local ok, caps3 = R.fullmatch("model\\.layers\\.(\\d+)\\.(.*)", "model.layers.7.self_attn")
check(ok and caps3[1] == "7" and caps3[2] == "self_attn", "fullmatch returns the captures")

-- compiled objects and errors
local re = R.compile(".*_proj")
check(re:fullmatch("x.q_proj") == true and re:fullmatch("x.q_proj.bias") == false, "compiled :fullmatch")
local okc, err = pcall(R.compile, "model.(layers")
check(not okc and tostring(err):find("missing closing parenthesis", 1, true) ~= nil and
  tostring(err):find("model.(layers", 1, true) ~= nil, "syntax error names the pattern", tostring(err))
local okm, errm = pcall(function() return R.fullmatch("a(", "a") end)
check(not okm and tostring(errm):find("bad regular expression", 1, true) ~= nil, "bad pattern via fullmatch")
check(R.fullmatch(".*", "\xff\xfe") == true, "a subject that is not UTF-8 still matches")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
