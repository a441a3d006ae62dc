#!/usr/bin/env bash
# test_repl.sh — the llmc REPL, driven through a pipe (no line editing, no
# prompts) and through a pseudo-terminal made by script(1) from util-linux
# (readline: prompts, Ctrl-C, tab completion, the history file).
#
#   bash tests/sh/test_repl.sh build/llmc
#
# The pty part sends input through a FIFO and waits for each answer before
# sending more, so it does not depend on timing.  Prints one line per failed
# check and "N passed, M failed" last; exits non-zero when a check failed.
set -u

LLMC=${1:?usage: test_repl.sh path/to/llmc}
[ -x "$LLMC" ] || { echo "FAIL: no executable at $LLMC"; echo "0 passed, 1 failed"; exit 1; }
LLMC=$(cd "$(dirname "$LLMC")" && pwd)/$(basename "$LLMC")
TMP=$(mktemp -d)
export LLMC_HISTORY="$TMP/history" # never the user's file
export INPUTRC=/dev/null           # nor the user's key bindings
export TERM=dumb                   # no escape sequences in the output
trap '' PIPE # a dead llmc must fail checks, not kill this script on a FIFO write

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
  failed=$((failed + 1))
  echo "FAIL: $*"
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

# repl_pipe INPUT: run `llmc -i` with INPUT on a pipe; sets $out, $err, $rc.
repl_pipe() {
  printf '%s' "$1" | "$LLMC" -i >"$TMP/out" 2>"$TMP/err"
  rc=$?
  out=$(cat "$TMP/out")
  err=$(cat "$TMP/err")
}

# =============================================================================
# Through a pipe
# =============================================================================
repl_pipe $'1+1\n=2*3\nreturn 4, "x", nil\n'
expect_eq "$rc" 0 "pipe: exit code at end of input"
expect_eq "$out" $'2\n6\n4\tx\tnil' "pipe: expressions print, =expr, several values tab-separated, no prompts"

repl_pipe $'function tri(a)\n  local b = a * 3\n  return b\nend\n=tri(14)\nt = {\n10,\n20}\n=#t + t[2]\n'
expect_eq "$out" $'42\n22' "pipe: statements over several lines"
expect_eq "$err" "" "pipe: multi-line statements raise nothing"

repl_pipe $'error("boom")\nnil + 1\n=7*6\n'
expect_eq "$out" "42" "pipe: an error does not end the session"
expect_has "$err" "llmc: stdin:1: boom" "pipe: error message"
expect_has "$err" "stack traceback:" "pipe: error traceback"
expect_has "$err" "attempt to perform arithmetic on a nil value" "pipe: runtime error in an expression"
expect_eq "$rc" 0 "pipe: errors in statements leave the exit code at 0"

repl_pipe $'setmetatable({}, {__tostring = function() return "Tensor(2x3, bf16, cpu)" end})\n'
expect_eq "$out" "Tensor(2x3, bf16, cpu)" "pipe: results print through __tostring"

repl_pipe $'_PROMPT = "P> "\nx = 1\n=x\n'
expect_eq "$out" "1" "pipe: no prompt is printed when stdin is not a terminal"

repl_pipe $'=1\nfunction g(\n'
expect_eq "$out" "1" "pipe: statement cut by end of input"
expect_has "$err" "<eof>" "pipe: an unfinished statement at end of input is reported"

repl_pipe $'print = function(...) io.write("custom:", select("#", ...), "\\n") end\n1, 2\n'
expect_eq "$out" "custom:2" "pipe: results go through the global print"

# SIGINT through a pipe: a running loop is interrupted, the session goes on,
# and SIGINT while waiting for input does not end it either.
rm -f "$TMP/fifo" && mkfifo "$TMP/fifo"
"$LLMC" -i <"$TMP/fifo" >"$TMP/out" 2>"$TMP/err" &
pid=$!
exec 3>"$TMP/fifo"
wait_file() { # wait_file FILE NEEDLE: poll up to 10 s
  local i
  for ((i = 0; i < 200; i++)); do
    grep -qF -- "$2" "$1" && return 0
    sleep 0.05
  done
  return 1
}
printf '%s\n' 'io.write("LOOP" .. "ING\n") io.flush() while true do end' >&3
if wait_file "$TMP/out" LOOPING; then pass; else fail "pipe: loop did not start"; fi
kill -INT "$pid"
if wait_file "$TMP/err" "interrupted!"; then pass; else fail "pipe: SIGINT did not interrupt the loop"; fi
printf '=40+2\n' >&3
if wait_file "$TMP/out" 42; then pass; else fail "pipe: session dead after the interrupt"; fi
kill -INT "$pid" # at the "prompt"
sleep 0.2
printf '=1000+1\n' >&3
if wait_file "$TMP/out" 1001; then pass; else fail "pipe: session dead after SIGINT at the prompt"; fi
exec 3>&-
for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL "$pid"
  fail "pipe: llmc still running 10 s after the end of its input"
fi
wait "$pid"
expect_eq "$?" 0 "pipe: exit code after interrupts"

# =============================================================================
# Through a pseudo-terminal
# =============================================================================
# pty_start: llmc (no arguments: stdin is a terminal, so the REPL) under
# script(1); input goes through fd 3, output (echo included) to $PTY_OUT.
PTY_OUT="$TMP/pty.out"
mark=0
pty_start() {
  rm -f "$TMP/pty.in" "$PTY_OUT" && mkfifo "$TMP/pty.in" && : >"$PTY_OUT"
  script -qefc "$(printf '%q' "$LLMC")" /dev/null <"$TMP/pty.in" >"$PTY_OUT" 2>&1 &
  pty_pid=$!
  exec 3>"$TMP/pty.in"
  mark=0
}
send() { printf "$1" >&3; }
# expect NEEDLE LABEL: wait until NEEDLE shows in the output after the end
# of the previous match (up to 10 s).
expect() {
  local i off
  for ((i = 0; i < 200; i++)); do
    off=$(tail -c +$((mark + 1)) "$PTY_OUT" | grep -boF -- "$1" | head -n 1 | cut -d: -f1)
    if [ -n "$off" ]; then
      mark=$((mark + off + ${#1}))
      pass
      return 0
    fi
    kill -0 "$pty_pid" 2>/dev/null || i=1000 # the session is gone: fail now
    sleep 0.05
  done
  fail "pty: $2: [$1] not seen; output since the last match:"
  tail -c +$((mark + 1)) "$PTY_OUT" | cat -A | sed 's/^/    /'
  return 1
}
# pty_end: Ctrl-D, then the exit code of llmc (script -e passes it on).
pty_end() {
  local i
  send '\004'
  exec 3>&-
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pty_pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pty_pid" 2>/dev/null; then
    kill "$pty_pid"
    fail "pty: Ctrl-D did not end the session"
  fi
  wait "$pty_pid"
  pty_rc=$?
}

if ! command -v script >/dev/null || ! script -qec true /dev/null </dev/null >/dev/null 2>&1; then
  echo "SKIP: pty tests: script(1) from util-linux cannot open a pseudo-terminal here"
else
  pty_start
  expect "llmc " "banner with the version"
  expect "> " "first prompt"

  send '=1000+1\n'
  expect "1001" "=expr prints its value"
  send '2+3*4\n'
  expect "14" "an expression prints its value"

  # multi-line input: the continuation prompt, then the function works
  send 'function tri(a)\n'
  expect ">> " "continuation prompt"
  send '  local b = a * 3\n'
  expect ">> " "continuation prompt again"
  send '  return b\nend\n'
  send '=tri(111)\n'
  expect "333" "function defined over several lines"

  # an error does not end the session
  send 'error("boo" .. "m")\n'
  expect "llmc: stdin:1: boom" "error message"
  send '=20+1\n'
  expect "21" "session goes on after an error"

  # Ctrl-C interrupts a running loop; the session survives
  send 'io.write("LOOP" .. "ING\\n") io.flush() while true do end\n'
  expect "LOOPING" "loop started"
  send '\003'
  expect "interrupted!" "Ctrl-C interrupts a running loop"
  send '=40+2\n'
  expect "42" "session goes on after Ctrl-C"

  # Ctrl-C at the prompt drops the line being typed
  send 'zzq'
  expect "zzq" "typed text echoed"
  send '\003'
  send '=6*7+1\n'
  expect "43" "Ctrl-C at the prompt drops the line (no 'zzq=6*7+1')"
  # ... and the statement being continued
  send 'function g(\n'
  expect ">> " "continuation before Ctrl-C"
  send '\003'
  send '=2+3+100\n'
  expect "105" "Ctrl-C in a continuation drops the whole statement"

  # _PROMPT overrides the prompt
  send '_PROMPT = "llmc" .. "%% "\n'
  expect "llmc% " "_PROMPT sets the prompt"
  send '_PROMPT = nil\n'

  # tab completion: global table fields, methods of a string and of a
  # userdata (metatable __index tables), nested tables, global names
  send 'string.fo\t("%%05d", 42)\n'
  expect "00042" "string.fo<TAB> completes to string.format"
  send 's = "ab"\n'
  send '=s:up\t()\n'
  expect "AB" "s:up<TAB> completes a string method"
  send 'io.stdout:wri\t("W" .. "X\\n")\n'
  expect "WX" "io.stdout:wri<TAB> completes a userdata method"
  send 't = {inner = {value_x = 12340 + 5}}\n'
  send '=t.inner.val\t\n'
  expect "12345" "t.inner.val<TAB> completes a nested field"
  send 'lst = {{deep = {answer_z = 600 + 66}}}\n'
  send '=lst[1].deep.ans\t\n'
  expect "666" "lst[1].deep.ans<TAB> completes through an index"
  # __index function + __methods table (the llmc tensor convention)
  send 'local M = {meth_one = function() return "M" .. "1" end}; mobj = setmetatable({}, {__index = function(_, k) return M[k] end, __methods = M})\n'
  send '=mobj:meth_o\t()\n'
  expect "M1" "mobj:meth_o<TAB> completes from the metatable's __methods"
  send 'my_unique_global = 7000 + 7\n'
  send '=my_unique_gl\t\n'
  expect "7007" "global names complete"
  # several candidates: the second Tab lists them
  send 't2 = {["alp" .. "ha1"] = 1, ["alp" .. "ha2"] = 2, ["be" .. "ta"] = 3}\n'
  send 't2.al\t'
  expect "pha" "Tab inserts the common prefix of the candidates"
  send '\t' # readline: the Tab after a partial completion only rings the bell
  send '\t'
  expect "alpha2" "one more Tab lists the candidates"
  if tail -c +1 "$PTY_OUT" | grep -q "beta"; then fail "pty: candidates not filtered by prefix"; else pass; fi
  send '\003'
  # completion never calls an __index function
  # (the tty turns ^C into SIGINT when it is written and drops input readline
  # has not read yet: wait for the echo before each ^C, or a loaded machine
  # loses the line)
  send 'trap = setmetatable({}, {__index = function() hits = (hits or 0) + 1 end}); print("trap" .. "set")\n'
  expect "trapset" "the trap table is defined"
  send 'trap.ab\t\t\t'
  expect "trap.ab" "the completion attempt is echoed"
  send '\003'
  send '=hits == nil and "no " .. "calls" or "CALLED"\n'
  expect "no calls" "completion does not run __index functions"

  # history: a multi-line statement, kept for the next session
  send 'function hist_f(a)\nreturn a * 2\nend\n'
  send '=hist_f ~= nil and "def" .. "ined"\n'
  expect "defined" "multi-line function for the history"
  pty_end
  expect_eq "$pty_rc" 0 "pty: Ctrl-D exits with status 0"
  if [ -f "$LLMC_HISTORY" ]; then
    hist=$(cat "$LLMC_HISTORY")
    expect_has "$hist" $'function hist_f(a)\nreturn a * 2\nend' "history file has the multi-line statement"
    expect_has "$hist" "=1000+1" "history file has expressions as typed"
    expect_lacks "$hist" "zzq" "a line dropped by Ctrl-C is not in the history"
  else
    fail "pty: no history file written at $LLMC_HISTORY"
  fi

  # a new session recalls the multi-line statement as one entry (Ctrl-P)
  pty_start
  expect "> " "second session prompt"
  send '=hist_f\n'
  expect "nil" "hist_f is not defined in a fresh session"
  # newest first: "=hist_f", "=hist_f ~= nil ...", the definition
  send '\020\020\020\n'
  send '=hist_f(21) + 100\n'
  expect "142" "Ctrl-P recalls the whole multi-line statement from the file"
  pty_end
  expect_eq "$pty_rc" 0 "pty: second session exit status"

  # the history file is capped at 1000 entries
  {
    for i in $(seq 1 1500); do printf '#%d\nold_entry_%d = %d\n' $((1700000000 + i)) "$i" "$i"; done
  } >"$LLMC_HISTORY"
  pty_start
  expect "> " "third session prompt"
  pty_end
  entries=$(grep -c '^old_entry_' "$LLMC_HISTORY")
  expect_eq "$entries" 1000 "history file capped at 1000 entries"
  if grep -q '^old_entry_1500 = 1500$' "$LLMC_HISTORY" && ! grep -q '^old_entry_500 = 500$' "$LLMC_HISTORY"; then
    pass
  else
    fail "pty: the cap keeps the newest entries"
  fi

  # an unwritable history file is not an error
  LLMC_HISTORY=/nonexistent/dir/history pty_start
  expect "> " "session with an unwritable history file"
  send '=300+3\n'
  expect "303" "unwritable history file: the session works"
  pty_end
  expect_eq "$pty_rc" 0 "unwritable history file: exit status"
fi

rm -rf "$TMP"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
