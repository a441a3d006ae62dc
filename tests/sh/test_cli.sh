#!/usr/bin/env bash
# test_cli.sh — the llmc command line: options, the arg table, exit codes,
# error messages with tracebacks, stdin scripts, Ctrl-C during a script.
#
#   bash tests/sh/test_cli.sh build/llmc
#
# Prints one line per failed check and "N passed, M failed" last; exits
# non-zero when a check failed.
set -u

LLMC=${1:?usage: test_cli.sh path/to/llmc}
[ -x "$LLMC" ] || { echo "FAIL: no executable at $LLMC"; echo "0 passed, 1 failed"; exit 1; }
LLMC=$(cd "$(dirname "$LLMC")" && pwd)/$(basename "$LLMC")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export LLMC_HISTORY="$TMP/history" # never the user's file

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
  failed=$((failed + 1))
  echo "FAIL: $*"
}

# run ARGS...: runs llmc with stdin from $STDIN (default: empty), sets
# $out, $err and $rc.
STDIN=/dev/null
run() {
  "$LLMC" "$@" <"$STDIN" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  out=$(cat "$TMP/out")
  err=$(cat "$TMP/err")
}

expect_rc() { # expect_rc CODE LABEL
  if [ "$rc" -eq "$1" ]; then pass; else fail "$2: exit code $rc, expected $1 (stderr: $err)"; fi
}
expect_eq() { # expect_eq GOT WANT LABEL
  if [ "$1" == "$2" ]; then pass; else fail "$3: got [$1], expected [$2]"; fi
}
expect_has() { # expect_has TEXT NEEDLE LABEL
  if [[ "$1" == *"$2"* ]]; then pass; else fail "$3: [$2] not in [$1]"; fi
}
expect_lacks() { # expect_lacks TEXT NEEDLE LABEL
  if [[ "$1" != *"$2"* ]]; then pass; else fail "$3: [$2] unexpectedly in [$1]"; fi
}

# ---- --version / -v -------------------------------------------------------
version=$(sed -n 's/^project(llmc VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
run --version
expect_rc 0 "--version"
if [[ "$out" =~ ^llmc\ ${version//./\\.}\ \(Lua\ 5\.4\.[0-9]+,\ OpenBLAS\ [0-9]+\.[0-9]+\.[0-9]+[^,]*,\ CUDA\ (yes|no)\)$ ]]; then
  pass
else
  fail "--version: [$out] does not match 'llmc $version (Lua 5.4.x, OpenBLAS x.y.z ..., CUDA yes|no)'"
fi
version_line=$out
run -v
expect_eq "$out" "$version_line" "-v prints the same line as --version"

# ---- --help -------------------------------------------------------------------
run --help
expect_rc 0 "--help"
expect_eq "$err" "" "--help writes nothing on stderr"
for word in "usage: llmc" " -e " " -i " " -l " "--version" "LLMC_PATH" "LLMC_FIXTURES" \
  "LLMC_HISTORY" "OMP_NUM_THREADS" "llmc recipes/fp8_block.lua"; do
  expect_has "$out" "$word" "--help mentions '$word'"
done

# ---- bad options: usage on stderr, exit 1 --------------------------------------
run --bogus
expect_rc 1 "unknown option"
expect_has "$err" "unrecognized option '--bogus'" "unknown option is named"
expect_has "$err" "usage: llmc" "unknown option prints the usage"
expect_eq "$out" "" "unknown option writes nothing on stdout"
run -e
expect_rc 1 "-e without its chunk"
expect_has "$err" "'-e' needs an argument" "-e without its chunk: message"

# ---- -e ----------------------------------------------------------------------------
run -e 'io.write(6 * 7)'
expect_rc 0 "-e"
expect_eq "$out" "42" "-e runs its chunk"
run -e 'x = 1' -e 'x = x * 10' -e 'x = x + 2' -e 'io.write(x)'
expect_eq "$out" "12" "several -e run in order"
run -e 'error("first")' -e 'io.write("NOT REACHED")'
expect_rc 1 "error in -e"
expect_lacks "$out" "NOT REACHED" "an error in -e stops the later chunks"
expect_has "$err" "llmc: (command line):1: first" "error in -e: message"
run -e 'local x = '
expect_rc 1 "syntax error in -e"
expect_has "$err" "llmc: (command line):1: unexpected symbol near <eof>" "syntax error in -e: message"

# -l mod: global mod = require(mod), in order with -e
mkdir -p "$TMP/mods"
printf 'return { value = "from mymod" }\n' >"$TMP/mods/mymod.lua"
cd "$TMP/mods" || exit 1
run -e 'package.path = "./?.lua;" .. package.path' -l mymod -e 'io.write(mymod.value)'
cd "$ROOT" || exit 1
expect_rc 0 "-l"
expect_eq "$out" "from mymod" "-l mod sets the global mod (in order with -e)"

# ---- scripts and the arg table -------------------------------------------------
cat >"$TMP/args.lua" <<'EOF'
local t = {}
for i = -3, #arg do t[#t + 1] = i .. "=" .. tostring(arg[i]) end
t[#t + 1] = "n=" .. select("#", ...)
t[#t + 1] = "dots=" .. table.concat({...}, ",")
io.write(table.concat(t, "|"))
EOF
run -e 'y = 1' "$TMP/args.lua" a "b c"
expect_rc 0 "script with arguments"
expect_eq "$out" "-3=$LLMC|-2=-e|-1=y = 1|0=$TMP/args.lua|1=a|2=b c|n=2|dots=a,b c" \
  "arg table: arg[0] = script, positive = arguments, negative = interpreter and options"
run -- "$TMP/args.lua" x
expect_eq "$out" "-3=nil|-2=$LLMC|-1=--|0=$TMP/args.lua|1=x|n=1|dots=x" "'--' ends the options"
run -e 'io.write(tostring(arg[0]), " ", tostring(arg[1]), " ", tostring(arg[-1]))'
expect_eq "$out" "$LLMC -e nil" "no script: arg[0] is the interpreter, the options follow (as lua.c)"

# ---- errors: message + traceback on stderr, exit 1 -----------------------------
cat >"$TMP/boom.lua" <<'EOF'
function inner(x)
  error("boom " .. x)
end
local function outer() inner(7) end
io.write("before ")
outer()
io.write("NOT REACHED")
EOF
run "$TMP/boom.lua"
expect_rc 1 "runtime error"
expect_eq "$out" "before " "runtime error: output before the error kept, nothing after"
expect_eq "$(head -n 1 "$TMP/err")" "llmc: $TMP/boom.lua:2: boom 7" "runtime error: first line"
expect_has "$err" "stack traceback:" "runtime error: traceback"
expect_has "$err" "boom.lua:2: in function 'inner'" "traceback names the erroring function"
expect_has "$err" "boom.lua:6: in main chunk" "traceback reaches the main chunk"

run -e 'error(setmetatable({}, {__tostring = function() return "custom error object" end}))'
expect_rc 1 "error object with __tostring"
expect_eq "$(head -n 1 "$TMP/err")" "llmc: custom error object" "error object printed through __tostring"
expect_has "$err" "stack traceback:" "error object: traceback too"
run -e 'error({code = 5})'
expect_has "$err" "llmc: (error object is a table value)" "error object without __tostring"
run -e 'local function r() return 1 + r() end r()'
expect_rc 1 "stack overflow"
expect_has "$err" "stack overflow" "stack overflow: message"

printf 'x = \n' >"$TMP/syntax.lua"
run "$TMP/syntax.lua"
expect_rc 1 "syntax error in a script"
expect_has "$err" "llmc: $TMP/syntax.lua:2: unexpected symbol near <eof>" "syntax error: file and line"

run "$TMP/no_such_script.lua"
expect_rc 1 "missing script"
expect_eq "$err" "llmc: cannot open $TMP/no_such_script.lua: No such file or directory" "missing script: message"
run "$TMP"
expect_rc 1 "a directory as the script"
expect_has "$err" "cannot read $TMP" "a directory as the script: message"

# ---- os.exit codes propagate --------------------------------------------------------
run -e 'os.exit(3)'
expect_rc 3 "os.exit(3)"
run -e 'io.write("flushed"); os.exit(true, true)'
expect_rc 0 "os.exit(true)"
expect_eq "$out" "flushed" "os.exit(true, true) flushes the output"
run -e 'os.exit(false)'
expect_rc 1 "os.exit(false)"
printf 'os.exit(7)\n' >"$TMP/exit7.lua"
run "$TMP/exit7.lua"
expect_rc 7 "os.exit(7) in a script"

# ---- stdin as the script ----------------------------------------------------------
printf 'io.write("from stdin ", select("#", ...), " ", tostring(arg[0]))\n' >"$TMP/stdin.lua"
STDIN="$TMP/stdin.lua" run
expect_rc 0 "stdin script (no tty, no arguments)"
expect_eq "$out" "from stdin 0 $LLMC" "stdin that is not a tty runs as a script"
printf 'io.write(table.concat({...}, ","))\n' >"$TMP/stdin.lua"
STDIN="$TMP/stdin.lua" run - p q
expect_eq "$out" "p,q" "'-' runs stdin with the arguments after it"
printf 'error("from stdin")\n' >"$TMP/stdin.lua"
STDIN="$TMP/stdin.lua" run
expect_rc 1 "error in a stdin script"
expect_has "$err" "llmc: stdin:1: from stdin" "error in a stdin script: chunk name"

# ---- -i after a failing script: the REPL opens, the exit code says it failed ------
printf 'x = 5\nerror("half way")\n' >"$TMP/half.lua"
printf '=x * 2\n' >"$TMP/stdin.lua"
STDIN="$TMP/stdin.lua" run -i "$TMP/half.lua"
expect_rc 1 "-i after a failing script"
expect_eq "$out" "10" "-i after a failing script: the REPL sees its globals"
expect_has "$err" "half way" "-i after a failing script: its error is reported"

# ---- Ctrl-C during a script: "interrupted!", exit 1 ---------------------------------
"$LLMC" -e 'io.write("LOOPING\n"); io.flush(); while true do end' >"$TMP/out" 2>"$TMP/err" </dev/null &
pid=$!
for _ in $(seq 100); do grep -q LOOPING "$TMP/out" && break; sleep 0.05; done
kill -INT "$pid"
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL "$pid"
  fail "SIGINT during a script: still running 10 s later"
fi
wait "$pid"
rc=$?
err=$(cat "$TMP/err")
expect_rc 1 "SIGINT during a script"
expect_has "$err" "interrupted!" "SIGINT during a script: message"
expect_has "$err" "stack traceback:" "SIGINT during a script: traceback"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
