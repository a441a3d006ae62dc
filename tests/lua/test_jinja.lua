-- Unit tests for llmc.jinja: whitespace control (trim_blocks / lstrip_blocks / - and +
-- modifiers), expressions with Python semantics, filters, tests, loops, scoping, macros,
-- JSON, and errors with line:column positions.  Each expected string was worked out by hand
-- from Jinja2 3.x semantics (and agrees with Python jinja2 3.1.6 configured as transformers).

local jinja = require "llmc.jinja"

local passed, failed = 0, 0
local function check(cond, what, detail)
  if cond then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. what .. (detail and ("\n  " .. detail) or ""))
  end
end

local json = jinja.json_decode
local users = {
  jinja.odict { { "name", "ann" }, { "on", true }, { "age", 31 } },
  jinja.odict { { "name", "bob" }, { "on", false }, { "age", 25 } },
  jinja.odict { { "name", "cy" }, { "on", true }, { "age", 40 } },
}

-- { template, expected, vars?, compile/render options? }
-- CASES BEGIN
local CASES = {
  -- whitespace control (default: trim_blocks and lstrip_blocks on, as Hugging Face)
  { "{% if true %}\nyes\n{% endif %}\nafter", "yes\nafter" },
  { "{% if true %}\nyes\n{% endif %}\nafter", "\nyes\n\nafter", nil, { trim_blocks = false, lstrip_blocks = false } },
  { "  {% if true %}\n  x\n  {% endif %}\n", "  x\n" },
  { "  {% if true %}\n  x\n  {% endif %}\n", "  \n  x\n  ", nil, { trim_blocks = false, lstrip_blocks = false } },
  { "  {% if true %}\n  x\n  {% endif %}\n", "    x\n  ", nil, { trim_blocks = true, lstrip_blocks = false } },
  { "  {{ 'v' }}\n  {% set a = 1 %}\nz", "  v\nz" },
  { "a {% if true %}b{% endif %}", "a b" },
  { "\t \t{% if true %}x{% endif %}", "x" },
  { "  {%+ if true %}x{% endif %}", "  x" },
  { "{% if true +%}\nx{% endif %}", "\nx" },
  { "a  \n  {%- if true -%}  \n  b  {%- endif %}", "ab" },
  { "x \n {{- 'y' -}} \n z", "xyz" },
  { "a\n{# c #}\nb", "a\nb" },
  { "a \n{#- c -#}\n b", "ab" },
  { "{% raw %}{{ x }}{% if %}{% endraw %}", "{{ x }}{% if %}" },
  { "x\n", "x" },
  { "x\n\n", "x\n" },
  { "x\n", "x\n", nil, { keep_trailing_newline = true } },
  { "a\r\nb\rc", "a\nb\nc" },
  { "{% for m in messages %}\n    {% if m.role == 'user' %}\n        U: {{ m.content }}\n    {% else %}\n        A: {{ m.content }}\n    {% endif %}\n{% endfor %}\n",
    "        U: hi\n        A: yo\n",
    { messages = { { role = "user", content = "hi" }, { role = "assistant", content = "yo" } } } },
  { "{% for m in messages %}\n    {% if m.role == 'user' %}\n        U: {{ m.content }}\n    {% else %}\n        A: {{ m.content }}\n    {% endif %}\n{% endfor %}\n",
    "\n    \n        U: hi\n    \n\n    \n        A: yo\n    \n",
    { messages = { { role = "user", content = "hi" }, { role = "assistant", content = "yo" } } },
    { trim_blocks = false, lstrip_blocks = false } },

  -- numbers, str() of values
  { "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", "3 -4 -2 3.5 1024 0.5" },
  { "{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 4 / 2 }} {{ 1e-4 }} {{ 1e16 }} {{ -0.0 }}",
    "1.0 0.30000000000000004 1e+20 1.5e-07 2.0 0.0001 1e+16 -0.0" },
  { "{{ 1_000 + 0x10 + 0b11 + 0o7 }}", "1026" },
  { "{{ [1, 'a', none, true, 1.5] }} {{ {'k': [1, (2, 3)]} }} {{ ('x',) }} {{ [\"it's\"] }}",
    "[1, 'a', None, True, 1.5] {'k': [1, (2, 3)]} ('x',) [\"it's\"]" },
  { "{{ 'a\\tb\\n' ~ '\\u00e9\\x41' }}|{{ 'q\\'s' }}|{{ \"d\\\"q\" }}|{{ 'a' 'b' }}", "a\tb\néA|q's|d\"q|ab" },
  { "{{ 'a' ~ 1 ~ none ~ true ~ x }}", "a1NoneTrue" },
  { "{{ -3|abs }} {{ [1, 2, 3]|length - 1 }} {{ 'ab' ~ ' x '|trim ~ 'c' }} {{ 2 * 3 + 4 }}", "3 2 abxc 10" },

  -- logic, comparisons, conditional expressions
  { "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ [1, 2] < [1, 3] }}",
    "True False True True False True" },
  { "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ none or '' }}|{{ not 1 == 2 }} {{ not [] }}", "x y |True True" },
  { "{{ 'a' if 0 else 'b' }}{{ 'c' if 1 }}{{ 'd' if 0 }}", "bc" },
  { "{{ 'tool_calls' in m }} {{ 'role' in m }} {{ m.role is defined }} {{ m.tool_calls is defined }}",
    "False True True False", { m = { role = "user" } } },

  -- strings: slicing by code point, methods
  { "{{ [1, 2, 3, 4][::-1] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][1:3] }} {{ 'héllo'[1:3] }} {{ 'abc'[-1] }} {{ 'héllo'|length }}",
    "[4, 3, 2, 1] [1, 2, 3] [2, 3] él c 5" },
  { "{{ 'a,b'.split(',') }} {{ ' x '.strip() }}|{{ 'xxaxx'.lstrip('x') }} {{ 'ab'.startswith('a') }} {{ 'ab'.endswith(('x', 'b')) }}",
    "['a', 'b'] x|axx True True" },
  { "{{ 'a b  c'.split() }} {{ 'A'.lower() }}{{ 'b'.upper() }} {{ 'aXa'.replace('a', '-') }} {{ 'a|b|c'.rsplit('|', 1) }}",
    "['a', 'b', 'c'] aB -X- ['a|b', 'c']" },
  { "{{ m.split('</think>')[-1].lstrip('\\n') }}|{{ m.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}",
    "answer|why", { m = "<think>\nwhy\n</think>\n\nanswer" } },
  { "{{ '\\u00a0 x \\u3000'.strip() }}|{{ 'hello'.find('l') }} {{ 'héllo'.find('l') }} {{ 'abc'.find('z') }}", "x|2 2 -1" },
  { "{{ 'Straße ÉCOLE'|lower }}|{{ 'straße'|upper }}|{{ 'hello wORLD'|title }}|{{ 'hELLO'|capitalize }}",
    "straße école|STRASSE|Hello World|Hello" },
  { "{{ '%s=%d' % ('x', 3) }} {{ '%05.1f|%r' % (2.25, 'q') }} {{ '{}-{name}'.format(1, name='n') }}", "x=3 002.2|'q' 1-n" },

  -- filters
  { "{{ ' pad '|trim }}|{{ [3, 1, 2]|sort|join(',') }}|{{ 'Hi'|upper }}{{ 'Hi'|lower }}|{{ [1, 2]|first }}{{ [1, 2]|last }}",
    "pad|1,2,3|HIhi|12" },
  { "{{ {'a': 1}|items|list }}|{{ x|default('d') }}|{{ ''|default('d', true) }}|{{ none|default('d') }}|{{ [3, 1]|reverse|list }}",
    "[('a', 1)]|d|d|None|[1, 3]" },
  { "{{ users|selectattr('on')|map(attribute='name')|join(',') }} {{ users|rejectattr('on')|map(attribute='name')|first }} "
    .. "{{ users|sort(attribute='age', reverse=true)|map(attribute='name')|join }} {{ users|sum(attribute='age') }} "
    .. "{{ (users|max(attribute='age')).name }} {{ [1, 2, 3, 4]|select('even')|list }} {{ [1, 2, 1]|unique|list }}",
    "ann,cy bob cyannbob 96 cy [2, 4] [1, 2]", { users = users } },
  { "{{ 3|float }} {{ '42'|int + 1 }} {{ 2.7|int }} {{ 'x'|int(7) }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ 'a b'|replace(' ', '_') }}",
    "3.0 43 2 7 2.0 3.14 a_b" },
  { "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'x'|center(5) }}|{{ '<&>'|e }}|{{ 42|string ~ 1 }}|{{ 'hi'|safe }}",
    "a\n  b\n\n  c|  x  |&lt;&amp;&gt;|421|hi" },
  { "{{ d|dictsort }}", "[('a', 2), ('b', 1)]", { d = jinja.odict { { "b", 1 }, { "a", 2 } } } },

  -- tojson (json.dumps: separators ", " / ": ", ensure_ascii=False, key order kept)
  { "{{ {'b': 1, 'a': [true, none, 1.5, 'é\"\\n']}|tojson }}", "{\"b\": 1, \"a\": [true, null, 1.5, \"é\\\"\\n\"]}" },
  { "{{ {'a': [1, {}], 'b': []}|tojson(indent=2) }}", "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}" },
  { "{{ 'é😀'|tojson(ensure_ascii=true) }} {{ 'é'|tojson }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
    "\"\\u00e9\\ud83d\\ude00\" \"é\" {\"a\": 2, \"b\": 1}" },
  { "{{ d|tojson }} {% for k, v in d.items() %}{{ k }}{% endfor %} {% for k in d.a %}{{ k }}{% endfor %}",
    "{\"z\": 1, \"a\": {\"y\": 2, \"b\": 3}} za yb", { d = json('{"z": 1, "a": {"y": 2, "b": 3}}') } },
  { "{{ d|tojson }}", "{\"a\": 2, \"b\": 1}", { d = { b = 1, a = 2 } } },
  { "{{ d|tojson(separators=(',', ':')) }}", "[1,{\"k\":[]}]", { d = json('[1, {"k": []}]') } },

  -- tests
  { "{{ x is defined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ false is false }} {{ 0 is false }} "
    .. "{{ [] is sequence }} {{ {} is mapping }} {{ 3 is odd }} {{ y is not defined }} {{ 9 is divisibleby 3 }} {{ 1.0 is integer }}",
    "False True True True True False True True True True True False" },

  -- Undefined: prints empty, falsy, iterates empty, length 0
  { "[{{ x }}][{{ x|length }}][{{ x ~ 'a' }}][{% for i in x %}no{% endfor %}][{{ d.missing }}][{{ d['k'] }}][{{ [][3] }}]",
    "[][0][a][][][][]", { d = jinja.dict {} } },

  -- loops
  { "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}",
    "103TrueFalse3a;212FalseFalse3b;321FalseTrue3c;" },
  { "{% for x in [] %}x{% else %}empty{% endfor %}", "empty" },
  { "{% for x in [1, 2, 3, 4] if x is even %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", "2:1/2 4:2/2 " },
  { "{% for x in [1, 2, 3, 4, 5] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", "13" },
  { "{% for x in [1, 2, 3] %}{{ loop.cycle('o', 'e') }}{% endfor %}|{% for x in [1, 2] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}",
    "oeo|-2;1-;" },
  { "{% for k, v in [('a', 1), ('b', 2)] %}{{ k }}={{ v }} {% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}", "a=1 b=2 [h][é]" },
  { "{% for m in messages[::-1] %}{{ (messages|length - 1) - loop.index0 }}{{ m }}{% endfor %}", "2c1b0a", { messages = { "a", "b", "c" } } },

  -- scoping: loop bodies are scopes, if blocks are not; namespace() crosses scopes
  { "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}", "231" },
  { "{% set ns = namespace(total=0, seen=false) %}{% for i in [1, 2, 3] %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}{{ ns.seen }}",
    "6False" },
  { "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "5" },
  { "{% set a, b = 1, 2 %}{{ b }}{{ a }}", "21" },
  { "{% set body %}x{{ 1 + 1 }}{% endset %}[{{ body }}]{% set up | upper %}ab{% endset %}{{ up }}", "[x2]AB" },
  { "{% with a = 2 %}{{ a * 3 }}{% endwith %}[{{ a }}]", "6[]" },

  -- macros, if/elif/else, literals, calls
  { "{% macro tag(name, cls='c') %}<{{ name }} class={{ cls }}>{% endmacro %}{{ tag('a') }}{{ tag('b', cls='d') }}", "<a class=c><b class=d>" },
  { "{% for n in [0, 1, 2] %}{% if n == 0 %}zero{% elif n == 1 %}one{% else %}many{% endif %} {% endfor %}", "zero one many " },
  { "{% set d = {'a': {'b': [10, 20]}} %}{{ d.a.b[1] }}{{ d['a']['b'][0] }}{{ d.a.b.1 }}", "201020" },
  { "{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('z', 'dflt') }}{{ {'a': 1}.keys()|list }}{{ {'z': 1, 'a': 2}|tojson }}", "1dflt['a']{\"z\": 1, \"a\": 2}" },
  { "{% filter upper %}ab{{ 'c' }}{% endfilter %}{% generation %}g{% endgeneration %}", "ABCg" },
  { "{% for i in range(3) %}{{ i }}{% endfor %}{{ range(1, 8, 3)|list }}{{ dict(a=1, b=2)|tojson }}", "012[1, 4, 7]{\"a\": 1, \"b\": 2}" },
  { "{{ add(1, 2) }} {{ kw(1, sep='-') }}", "3 1-",
    { add = function(a, b) return a + b end, kw = function(a, k) return a .. k.sep end } },
  { "{{ strftime_now('%Y-%m-%d %H:%M') }}", "2024-07-26 12:00", nil, { now = 1721995200, utc = true } },
}
-- CASES END

for i, c in ipairs(CASES) do
  local tpl, want, vars, opts = c[1], c[2], c[3], c[4]
  local ok, got = pcall(function() return jinja.compile(tpl, opts):render(vars or {}, opts) end)
  check(ok and got == want, string.format("case %d: %q", i, tpl),
    ok and string.format("got  %q\n  want %q", got, want) or ("error: " .. tostring(got)))
end

-- errors: class, message and template position -----------------------------------------------
local ERRORS = {
  { "a\nb\n{{ 1 + 'x' }}", "<template>:3:6: TypeError: unsupported operand type(s) for +: 'int' and 'str'" },
  { "{{ 'x' + 1 }}", "<template>:1:8: TypeError: can only concatenate str (not \"int\") to str" },
  { "{{ x.y }}", "<template>:1:5: UndefinedError: 'x' is undefined" },
  { "{{ d.nope.z }}", "UndefinedError: 'dict object' has no attribute 'nope'", { d = jinja.dict {} } },
  { "{{ 1 // 0 }}", "ZeroDivisionError: integer division or modulo by zero" },
  { "{{ [1].append(2) }}", "access to attribute 'append' of 'list' object is unsafe." },
  { "{% set x = 1 %}{% set x.y = 2 %}", "cannot assign attribute on non-namespace object" },
  { "{{ raise_exception('oops: ' ~ 42) }}", "<template>:1:19: oops: 42" },
  { "{{ undefined_thing|tojson }}", "TypeError: Object of type Undefined is not JSON serializable" },
  { "{% for x in y %}\n{{ x }}\n",
    "<template>:2:8: TemplateSyntaxError: Unexpected end of template. Jinja was looking for the following tags: 'else' or 'endfor'." },
  { "{% if x %}{% endfor %}", "<template>:1:14: TemplateSyntaxError: Encountered unknown tag 'endfor'." },
  { "\n  {{ x | nosuch }}", "<template>:2:10: TemplateSyntaxError: No filter named 'nosuch'." },
  { "{{ x is nosuch }}", "TemplateSyntaxError: No test named 'nosuch'." },
  { "{{ 'abc }}", "<template>:1:4: TemplateSyntaxError: unterminated string literal" },
  { "{{ (1 ] }}", "<template>:1:7: TemplateSyntaxError: unexpected ']', expected ')'" },
  { "{# open", "TemplateSyntaxError: Missing end of comment tag" },
  { "{% break %}", "TemplateSyntaxError: 'break' outside of a loop" },
  { "{% include 'x' %}", "the 'include' tag is not supported" },
  { "{{ 'é' ~ 1 + }}", "<template>:1:14: TemplateSyntaxError: unexpected end of print statement" },
}
for i, c in ipairs(ERRORS) do
  local ok, err = pcall(function() return jinja.compile(c[1]):render(c[3] or {}) end)
  check(not ok and tostring(err):find(c[2], 1, true) ~= nil, string.format("error %d: %q", i, c[1]),
    ok and ("rendered " .. string.format("%q", err)) or ("error was: " .. tostring(err)))
end
do
  local ok, err = pcall(jinja.compile, "x\n{{ }}", { name = "my.jinja" })
  check(not ok and tostring(err):find("^my%.jinja:2:4: ") ~= nil, "template name in syntax errors", tostring(err))
end

-- JSON helpers -------------------------------------------------------------------------------
do
  local v = json('[1, 1.0, 1e2, -0, "\\u00e9\\ud83d\\ude00", {"k": null}, [], {}]')
  check(math.type(v[1]) == "integer" and math.type(v[2]) == "float" and math.type(v[3]) == "float",
    "json_decode: integers stay integers, 1.0 / 1e2 are floats")
  check(v[5] == "é😀" and v[6].k == jinja.none, "json_decode: \\u escapes (surrogate pair) and null")
  check(jinja.kind(v[7]) == "list" and jinja.kind(v[8]) == "dict", "json_decode: [] is a list, {} is a dict")
  check(jinja.tojson(v) == '[1, 1.0, 100.0, 0, "é😀", {"k": null}, [], {}]', "tojson round trip", jinja.tojson(v))
  local ok, err = pcall(json, '{"a": 1,}')
  check(not ok and tostring(err):find("invalid JSON", 1, true) ~= nil, "json_decode rejects malformed JSON", tostring(err))
  local d = json('{"b": 1, "a": 2, "b": 3}')
  check(jinja.tojson(d) == '{"b": 3, "a": 2}', "duplicate keys: last value, first position (as Python)", jinja.tojson(d))
end

-- float repr (Python repr: shortest round-trip digits) ------------------------------------------
do
  local cases = { { 0.1, "0.1" }, { 1 / 3, "0.3333333333333333" }, { 2.0 ^ 53, "9007199254740992.0" },
    { 123456789.0, "123456789.0" }, { 1e-5, "1e-05" }, { 1.5e300, "1.5e+300" }, { 5e-324, "5e-324" },
    { 0 / 0, "nan" }, { -math.huge, "-inf" } }
  for _, c in ipairs(cases) do
    check(jinja.float_repr(c[1]) == c[2], "float_repr " .. c[2], jinja.float_repr(c[1]))
  end
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
