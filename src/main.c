/*
** main.c — the llmc executable: script runner and interactive REPL.
**
**   llmc recipes/fp8_block.lua a b    run a script; arg[0] = script, arg[1..] = a, b
**   llmc -e 'print(1)' -e 'x = 2'     run chunks given on the command line, in order
**   llmc -i script.lua                run the script, then open the REPL
**   llmc                              REPL on a terminal; stdin as a script otherwise
**
** The shape follows lua.c (Lua 5.4): main() only creates the state and runs
** pmain() under lua_pcall, so option handling and library opening are
** protected too, and the exit status comes from pmain's boolean result.
** Every chunk (script, -e, -l, REPL statement, the REPL's print of results)
** runs through docall(): a message handler that adds a traceback, and a
** SIGINT handler that is armed only while Lua code runs.
**
** What lua.c lacks and llmc adds: a persistent readline history file
** (multi-line statements stay one entry), tab completion of global names
** and of fields/methods reached through a dotted path without running any
** metamethod, Ctrl-C at the prompt that drops the line instead of killing
** the process, and the llmc interrupt flag polled by long C loops.
**
** Ownership: nothing here is shared with other modules.  The file-scope
** state below exists because signal handlers and readline's callbacks take
** no user pointer; each one says what it is for.  docs/repl.md is the user
** documentation.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "error.h"
#include "lua_llmc.h"

#ifndef LLMC_VERSION
#error "LLMC_VERSION must be defined by the build (see CMakeLists.txt)"
#endif

#define PROGNAME "llmc"
#define PROMPT1 "> "
#define PROMPT2 ">> "
#define HISTORY_MAX 1000          /* entries kept in memory and in the file */
#define COMPLETION_MAX_DEPTH 16   /* __index chain links followed; stops cycles */
#define EOF_MARK "<eof>"          /* ends the syntax error of an incomplete chunk */

/* Declared here rather than through <cblas.h>: that header may belong to
** another BLAS on some systems, while the build links libopenblas itself. */
char *openblas_get_config(void);
char *openblas_get_corename(void);

/* {==================================================================
** Messages and the protected call
** =================================================================== */

static void print_message(const char *msg) {
  fflush(stdout); /* keep results and errors in order on a shared terminal */
  fprintf(stderr, "%s: %s\n", PROGNAME, msg);
  fflush(stderr);
}

/* Print and pop the error message on top of the stack when status is an
** error; docall's handler has already made it a string with a traceback. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    print_message(msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

/* Message handler of every protected call: turn the error object into a
** string (its __tostring when it has one, so error objects carrying a
** tensor or a table print usefully) and append the traceback. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1); /* [err, ..., msg, msg+traceback] */
  return 1;
}

/* The state whose chunk is running: the SIGINT handler must reach it, and
** signal handlers take no argument. */
static lua_State *running_L = NULL;

/* Hook armed by the SIGINT handler: raises at the next Lua instruction,
** call or return, where unwinding is safe (the handler itself cannot). */
static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* SIGINT while a chunk runs: flag for C loops (llmc_interrupted), hook for
** Lua code.  lua_sethook is documented as safe to call from a signal
** handler; it only stores the hook fields, which the running thread reads
** at its next instruction, so it also works when the signal lands on an
** OpenMP/OpenBLAS worker thread.  The default action comes back so that a
** second Ctrl-C kills a C loop that never polls the flag. */
static void on_sigint_chunk(int sig) {
  signal(sig, SIG_DFL);
  llmc_interrupt_flag = 1;
  lua_sethook(running_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Call the function below narg arguments with the message handler and the
** SIGINT handler in place; afterwards the previous handler is back and no
** interrupt is pending.  Same contract as lua_pcall. */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg; /* function index */
  int status;
  struct sigaction sa, old;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  running_L = L;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint_chunk;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART; /* the core's read()/write() loops need not expect EINTR */
  sigaction(SIGINT, &sa, &old);
  status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &old, NULL);
  llmc_interrupt_flag = 0;
  if (lua_gethook(L) == stop_hook) /* Ctrl-C came after the last Lua instruction */
    lua_sethook(L, NULL, 0, 0);
  lua_remove(L, base);
  return status;
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

/* name == NULL reads stdin (chunk name "=stdin"). */
static int dofile(lua_State *L, const char *name) {
  return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod: global mod = require(mod) */
static int dolibrary(lua_State *L, const char *name) {
  int status;
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  status = docall(L, 1, 1);
  if (status == LUA_OK) lua_setglobal(L, name);
  return report(L, status);
}

/* }================================================================== */

/* {==================================================================
** Command line
** =================================================================== */

enum { ARG_ERROR = 1, ARG_E = 2, ARG_I = 4, ARG_V = 8, ARG_H = 16 };

static void print_version(void) {
  /* openblas_get_config() = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...":
  ** keep its first two words, add the kernel set picked for this CPU. */
  const char *cfg = openblas_get_config();
  const char *core = openblas_get_corename();
  size_t n = 0;
  int words = 0;
  if (cfg == NULL) cfg = "OpenBLAS";
  while (cfg[n] != '\0') {
    if (cfg[n] == ' ' && ++words == 2) break;
    n++;
  }
#ifdef LLMC_HAVE_CUDA
  const char *cuda = "yes";
#else
  const char *cuda = "no";
#endif
  printf("%s %s (%s, %.*s%s%s, CUDA %s)\n", PROGNAME, LLMC_VERSION, LUA_RELEASE, (int)n, cfg,
         core != NULL && *core ? " " : "", core != NULL ? core : "", cuda);
  fflush(stdout);
}

static void print_usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args...]]\n"
          "Run a Lua script with the llmc quantization toolkit, or open its REPL.\n"
          "\n"
          "Options:\n"
          "  -e chunk       run the Lua chunk (several -e run in order)\n"
          "  -l mod         require module 'mod' into the global 'mod'\n"
          "  -i             open the REPL after the script and -e chunks\n"
          "  -v, --version  print the version, Lua, BLAS and CUDA support\n"
          "  -h, --help     print this help\n"
          "  --             stop handling options\n"
          "  -              run stdin as the script and stop handling options\n"
          "With no script and no -e: the REPL when stdin is a terminal, else stdin\n"
          "is run as a script.  The script sees its arguments in the global 'arg'\n"
          "(arg[0] = script name, arg[1..n] = arguments) and as '...'.\n"
          "\n"
          "Environment:\n"
          "  LLMC_PATH        directory holding the llmc Lua modules (llmc/init.lua);\n"
          "                   overrides the source-tree and installed locations\n"
          "  LLMC_FIXTURES    directory of the large test fixtures (models, datasets)\n"
          "  LLMC_HISTORY     REPL history file (default ~/.llmc_history; empty: none)\n"
          "  OMP_NUM_THREADS  CPU threads used by the OpenMP and OpenBLAS kernels\n"
          "\n"
          "Examples:\n"
          "  %s recipes/fp8_block.lua          quantize with a recipe script\n"
          "  %s -i recipes/fp8_block.lua       ... then inspect the result in the REPL\n"
          "  %s -e 'print(require \"llmc\")'     run a one-liner\n"
          "  %s                                open the REPL\n",
          PROGNAME, PROGNAME, PROGNAME, PROGNAME, PROGNAME);
}

/* Scan the options before the script.  *script is set to the index of the
** script name (argc when there is none), or of the bad option on error. */
static int collect_args(char **argv, int *script) {
  int flags = 0, i;
  for (i = 1; argv[i] != NULL; i++) {
    const char *a = argv[i];
    *script = i;
    if (a[0] != '-') return flags;                 /* the script */
    if (strcmp(a, "-") == 0) return flags;         /* stdin is the script */
    if (strcmp(a, "--") == 0) {                    /* the next one is the script */
      *script = i + 1;
      return flags;
    }
    if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) flags |= ARG_V;
    else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) flags |= ARG_H;
    else if (strcmp(a, "-i") == 0) flags |= ARG_I;
    else if (a[1] == 'e' || a[1] == 'l') {         /* -e chunk, -echunk, -l mod, -lmod */
      if (a[1] == 'e') flags |= ARG_E;
      if (a[2] == '\0' && argv[++i] == NULL) return ARG_ERROR;
    } else
      return ARG_ERROR;
  }
  *script = i;
  return flags;
}

/* Run the -e and -l options, in order; the options end at argv[nopts]. */
static int run_args(lua_State *L, char **argv, int nopts) {
  int i;
  for (i = 1; i < nopts; i++) {
    const char *a = argv[i];
    if (a[0] == '-' && (a[1] == 'e' || a[1] == 'l')) {
      const char *extra = a + 2;
      if (*extra == '\0') extra = argv[++i];
      if ((a[1] == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra)) != LUA_OK)
        return 0;
    }
  }
  return 1;
}

/* Global 'arg' as lua.c builds it: arg[0] = script, arg[1..] = its
** arguments, negative indices = the interpreter and the options. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
  int i, narg;
  if (script == argc) script = 0; /* no script: the interpreter is arg[0] */
  narg = argc - (script + 1);
  lua_createtable(L, narg > 0 ? narg : 0, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Push arg[1..n] for the script's '...'; returns n. */
static int push_script_args(lua_State *L) {
  int i, n, t;
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  t = lua_gettop(L);
  n = (int)luaL_len(L, t);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  lua_remove(L, t);
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  int status;
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
  status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = push_script_args(L);
    status = docall(L, n, 0);
  }
  return report(L, status);
}

/* }================================================================== */

/* {==================================================================
** Line input: readline on a terminal, plain reads from a pipe or file
** =================================================================== */

enum { LINE_OK, LINE_EOF, LINE_INTR };

/* Ctrl-C outside a chunk.  The signal may be delivered to any thread that
** does not block it (OpenBLAS and OpenMP start workers), so the handler
** does not rely on interrupting the main thread's wait: it writes to a
** pipe that the line reader waits on beside the terminal (self-pipe). */
static volatile sig_atomic_t prompt_sigint = 0;
static int sigint_pipe[2] = {-1, -1};

static void on_sigint_prompt(int sig) {
  int saved = errno;
  (void)sig;
  prompt_sigint = 1;
  if (sigint_pipe[1] >= 0 && write(sigint_pipe[1], "", 1) < 0) {
    /* pipe full: a wake-up is already pending */
  }
  errno = saved;
}

static void drain_sigint_pipe(void) {
  char buf[64];
  while (sigint_pipe[0] >= 0 && read(sigint_pipe[0], buf, sizeof buf) > 0) {
  }
}

/* readline delivers the line through a callback without user data. */
static char *tty_line = NULL;
static int tty_line_done = 0;

static void on_readline_line(char *line) {
  tty_line = line;
  tty_line_done = 1;
  rl_callback_handler_remove(); /* restore the terminal before the chunk runs */
}

/* Read one line with readline's callback interface: the blocking
** readline() cannot be told to drop the line on Ctrl-C, while here the
** wait for a key also ends when the SIGINT pipe becomes readable. */
static int read_line_tty(const char *prompt, char **out) {
  int fd = fileno(rl_instream), status;
  drain_sigint_pipe(); /* a Ctrl-C between statements is forgotten */
  prompt_sigint = 0;
  tty_line = NULL;
  tty_line_done = 0;
  rl_callback_handler_install(prompt, on_readline_line);
  for (;;) {
    fd_set fds;
    int r, nfds = (fd > sigint_pipe[0] ? fd : sigint_pipe[0]) + 1;
    FD_ZERO(&fds);
    FD_SET(fd, &fds);
    if (sigint_pipe[0] >= 0) FD_SET(sigint_pipe[0], &fds);
    r = select(nfds, &fds, NULL, NULL, NULL);
    if (prompt_sigint) {
      /* Ctrl-C: drop the line being edited, go to a fresh line. */
      drain_sigint_pipe();
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_callback_handler_remove();
      fputs("\n", rl_outstream);
      fflush(rl_outstream);
      status = LINE_INTR;
      break;
    }
    if (r < 0 && errno == EINTR) continue; /* SIGWINCH and the like */
    if (r < 0) { /* the terminal is gone */
      rl_callback_handler_remove();
      status = LINE_EOF;
      break;
    }
    if (!FD_ISSET(fd, &fds)) continue;
    rl_callback_read_char();
    if (tty_line_done) {
      status = tty_line != NULL ? LINE_OK : LINE_EOF;
      break;
    }
  }
  *out = status == LINE_OK ? tty_line : NULL;
  return status;
}

/* Read one line from a pipe or file: no editing, no prompt.  Ctrl-C here
** is ignored (the handler has SA_RESTART there): there is no line being
** edited to drop, and the session must not end. */
static int read_line_plain(char **out) {
  char *buf = NULL;
  size_t cap = 0;
  ssize_t n = getline(&buf, &cap, stdin);
  if (n < 0) {
    free(buf);
    return LINE_EOF;
  }
  if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
  *out = buf;
  return LINE_OK;
}

/* }================================================================== */

/* {==================================================================
** History file
** =================================================================== */

/* File written after each entry; NULL when there is none. */
static char *history_path = NULL;

/* Load the history file ($LLMC_HISTORY, else ~/.llmc_history; an empty
** LLMC_HISTORY means none).  Entries are written with timestamp lines so
** that readline reads a multi-line statement back as one entry. */
static void history_open(void) {
  const char *env = getenv("LLMC_HISTORY");
  using_history();
  history_comment_char = '#';
  history_write_timestamps = 1;
  history_multiline_entries = 1;
  stifle_history(HISTORY_MAX);
  if (env != NULL) {
    if (*env == '\0') return;
    history_path = strdup(env);
  } else {
    const char *home = getenv("HOME");
    size_t n;
    if (home == NULL || *home == '\0') return;
    n = strlen(home) + sizeof "/.llmc_history";
    history_path = malloc(n);
    if (history_path != NULL) snprintf(history_path, n, "%s/.llmc_history", home);
  }
  if (history_path == NULL) return;
  /* read_history into a stifled list keeps the newest HISTORY_MAX entries;
  ** a full list may mean the file holds more: rewrite it at the cap. */
  if (read_history(history_path) == 0 && history_length >= HISTORY_MAX)
    write_history(history_path);
}

/* Add one statement (all its lines) to the history and the file.  Failing
** to write the file is not worth interrupting the session for. */
static void history_add(const char *entry) {
  HIST_ENTRY *last;
  const char *p = entry;
  while (isspace((unsigned char)*p)) p++;
  if (*p == '\0') return;
  last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last != NULL && strcmp(last->line, entry) == 0) return;
  add_history(entry);
  if (history_path != NULL && append_history(1, history_path) != 0)
    write_history(history_path); /* the file did not exist yet */
}

static void history_close(void) {
  free(history_path);
  history_path = NULL;
}

/* }================================================================== */

/* {==================================================================
** Tab completion
**
** The word before the cursor is split at its last '.' or ':' into a path
** (`model.layers[0].self_attn`) and a prefix (`q`).  The path is resolved
** without running any code: raw lookups in tables, and when a key is
** missing (or the value is a userdata or string), the metatable's __index
** when that is a table, else the metatable's __methods table (the method
** table of values whose __index is a function, like llmc tensors).
** __index functions are never called: they may do anything, and completing
** must not have side effects.  The candidates are the string keys of the
** value and of that fallback chain; after ':' only those whose value is a
** function.
** =================================================================== */

/* The REPL's state, for readline's completion callback. */
static lua_State *completion_L = NULL;
static char **completion_list = NULL;
static size_t completion_count = 0, completion_next = 0;

static const char *const lua_keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL};

static int is_keyword(const char *s, size_t n) {
  int i;
  for (i = 0; lua_keywords[i] != NULL; i++)
    if (strlen(lua_keywords[i]) == n && memcmp(lua_keywords[i], s, n) == 0) return 1;
  return 0;
}

static int is_name_start(int c) { return isalpha(c) || c == '_'; }
static int is_name_char(int c) { return isalnum(c) || c == '_'; }

/* Length of the Lua name at s (0 when s does not start with one). */
static size_t name_len(const char *s, size_t n) {
  size_t i = 0;
  if (n == 0 || !is_name_start((unsigned char)s[0])) return 0;
  while (i < n && is_name_char((unsigned char)s[i])) i++;
  return i;
}

/* Push the table that lookups on the value at idx fall back to: its
** metatable's __index when that is a table, else (an __index function, as
** on llmc tensors) the metatable's __methods table.  Returns 0, pushing
** nothing, when there is none. */
static int push_fallback(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return 0; /* [mt] */
  lua_pushliteral(L, "__index");
  if (lua_rawget(L, -2) != LUA_TTABLE) {   /* [mt, __index] */
    lua_pop(L, 1);
    lua_pushliteral(L, "__methods");
    if (lua_rawget(L, -2) != LUA_TTABLE) { /* [mt, __methods] */
      lua_pop(L, 2);
      return 0;
    }
  }
  lua_remove(L, -2); /* [fallback] */
  return 1;
}

/* [obj, key] -> [value]: raw lookup, then the fallback tables (never a
** function).  nil when the value cannot be reached without running code. */
static void safe_index(lua_State *L) {
  int depth;
  for (depth = 0; depth < COMPLETION_MAX_DEPTH; depth++) {
    if (lua_istable(L, -2)) {
      lua_pushvalue(L, -1);             /* [obj, key, key] */
      if (lua_rawget(L, -3) != LUA_TNIL) { /* [obj, key, value] */
        lua_replace(L, -3);             /* [value, key] */
        lua_pop(L, 1);                  /* [value] */
        return;
      }
      lua_pop(L, 1);                    /* [obj, key] */
    }
    if (!push_fallback(L, -2)) break;   /* [obj, key, fallback] */
    lua_replace(L, -3);                 /* [fallback, key] */
  }
  lua_pop(L, 2);
  lua_pushnil(L);
}

/* Push the value named by path ("a.b[0]['c']"), or nil. */
static void resolve_path(lua_State *L, const char *p, size_t n) {
  size_t k = name_len(p, n);
  lua_pushglobaltable(L);
  if (k == 0) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_pushlstring(L, p, k);
  safe_index(L);
  p += k;
  n -= k;
  while (n > 0 && !lua_isnil(L, -1)) {
    if (*p == '.') {
      k = name_len(p + 1, n - 1);
      if (k == 0) break;
      lua_pushlstring(L, p + 1, k);
      p += k + 1;
      n -= k + 1;
    } else if (*p == '[' && n >= 3 && (p[1] == '"' || p[1] == '\'')) {
      const char *q = memchr(p + 2, p[1], n - 2);
      if (q == NULL || (size_t)(q - p) + 2 > n || q[1] != ']') break;
      lua_pushlstring(L, p + 2, (size_t)(q - p - 2));
      n -= (size_t)(q + 2 - p);
      p = q + 2;
    } else if (*p == '[') {
      size_t i = 1;
      lua_Integer v = 0;
      int neg = 0;
      if (i < n && p[i] == '-') neg = 1, i++;
      if (i >= n || !isdigit((unsigned char)p[i])) break;
      while (i < n && isdigit((unsigned char)p[i])) v = v * 10 + (p[i++] - '0');
      if (i >= n || p[i] != ']') break;
      lua_pushinteger(L, neg ? -v : v);
      p += i + 1;
      n -= i + 1;
    } else
      break;
    safe_index(L);
  }
  if (n > 0) { /* unparsed rest: not a plain path */
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Add to the table at out the keys of the value at obj (and of its __index
** table chain) that start with prefix and can follow '.' or ':'. */
static void collect_keys(lua_State *L, int obj, int out, int methods_only, const char *prefix,
                         size_t plen) {
  int depth;
  int hide_meta = plen == 0 || prefix[0] != '_'; /* __gc, __index... only when asked */
  lua_pushvalue(L, obj); /* [cur] */
  for (depth = 0; depth < COMPLETION_MAX_DEPTH; depth++) {
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) { /* [cur, key, value] */
        if (lua_type(L, -2) == LUA_TSTRING && (!methods_only || lua_isfunction(L, -1))) {
          size_t kl;
          const char *k = lua_tolstring(L, -2, &kl);
          if (kl >= plen && memcmp(k, prefix, plen) == 0 && name_len(k, kl) == kl &&
              !is_keyword(k, kl) && !(hide_meta && kl >= 2 && k[0] == '_' && k[1] == '_')) {
            lua_pushvalue(L, -2);
            lua_pushboolean(L, 1);
            lua_rawset(L, out);
          }
        }
        lua_pop(L, 1); /* [cur, key] */
      }
    }
    if (!push_fallback(L, -1)) break; /* [cur, fallback] */
    lua_remove(L, -2);                /* [fallback] */
  }
  lua_pop(L, 1);
}

struct completion_request {
  const char *path; /* NULL: complete a global name */
  size_t path_len;
  int sep;          /* '.' or ':' */
  const char *prefix;
};

/* Runs under lua_pcall (allocation errors must not unwind through
** readline): returns a set {name = true} of the candidates. */
static int completion_collect(lua_State *L) {
  const struct completion_request *rq = lua_touserdata(L, 1);
  size_t plen = strlen(rq->prefix);
  int out;
  lua_newtable(L);
  out = lua_gettop(L);
  if (rq->path == NULL) {
    int i;
    lua_pushglobaltable(L);
    collect_keys(L, lua_gettop(L), out, 0, rq->prefix, plen);
    lua_pop(L, 1);
    for (i = 0; lua_keywords[i] != NULL; i++)
      if (strncmp(lua_keywords[i], rq->prefix, plen) == 0) {
        lua_pushboolean(L, 1);
        lua_setfield(L, out, lua_keywords[i]);
      }
  } else {
    resolve_path(L, rq->path, rq->path_len);
    if (!lua_isnil(L, -1)) collect_keys(L, lua_gettop(L), out, rq->sep == ':', rq->prefix, plen);
    lua_pop(L, 1);
  }
  return 1;
}

static void completion_free(void) {
  size_t i;
  for (i = 0; i < completion_count; i++) free(completion_list[i]);
  free(completion_list);
  completion_list = NULL;
  completion_count = completion_next = 0;
}

static char *completion_entry(const char *text, int state) {
  (void)text; /* the list already holds only matches */
  if (state == 0) completion_next = 0;
  if (completion_next < completion_count) return strdup(completion_list[completion_next++]);
  return NULL;
}

/* Find the path before the word being completed (which starts at `start`):
** sets rq->path/path_len/sep, or leaves path NULL for a global name.
** Returns 0 when the word follows something that is not a plain path
** (a call, a string, a number): nothing sensible to offer then. */
static int completion_split(const char *line, int start, struct completion_request *rq) {
  int end, b;
  rq->path = NULL;
  rq->path_len = 0;
  rq->sep = 0;
  if (start == 0 || (line[start - 1] != '.' && line[start - 1] != ':')) return 1;
  if (start >= 2 && line[start - 1] == '.' && line[start - 2] == '.') return 1; /* a .. b */
  rq->sep = line[start - 1];
  end = b = start - 1;
  while (b > 0) {
    char c = line[b - 1];
    if (is_name_char((unsigned char)c) || c == '.')
      b--;
    else if (c == ']') {
      int k = b - 2;
      while (k >= 0 && line[k] != '[') k--;
      if (k < 0) return 0;
      b = k;
    } else
      break;
  }
  if (b == end || !is_name_start((unsigned char)line[b])) return 0;
  if (b > 0 && (line[b - 1] == ':' || line[b - 1] == ')' || line[b - 1] == '"' ||
                line[b - 1] == '\'')) return 0;
  rq->path = line + b;
  rq->path_len = (size_t)(end - b);
  return 1;
}

static char **complete(const char *text, int start, int end) {
  lua_State *L = completion_L;
  struct completion_request rq;
  int top;
  (void)end;
  rl_attempted_completion_over = 1;      /* never fall back to file names */
  rl_completion_append_character = '\0'; /* a name is usually followed by . : ( */
  completion_free();
  if (L == NULL || !completion_split(rl_line_buffer, start, &rq)) return NULL;
  rq.prefix = text;
  top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return NULL;
  lua_pushcfunction(L, completion_collect);
  lua_pushlightuserdata(L, &rq);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      n++;
      lua_pop(L, 1);
    }
    completion_list = n > 0 ? calloc(n, sizeof *completion_list) : NULL;
    if (completion_list != NULL) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        const char *k = lua_tostring(L, -2); /* keys are strings: no conversion */
        char *copy = k != NULL ? strdup(k) : NULL;
        if (copy != NULL && completion_count < n) completion_list[completion_count++] = copy;
        else free(copy);
        lua_pop(L, 1);
      }
    }
  }
  lua_settop(L, top);
  if (completion_count == 0) return NULL;
  return rl_completion_matches(text, completion_entry);
}

/* }================================================================== */

/* {==================================================================
** The REPL
** =================================================================== */

enum { STMT_EOF = -1, STMT_NONE = -2 }; /* beside lua_load's statuses */

struct repl {
  lua_State *L;
  int tty; /* stdin is a terminal: readline, prompts, history */
};

/* _PROMPT / _PROMPT2 when they are strings or numbers (read raw: a strict
** _G must not raise here), else the defaults; copied into buf. */
static const char *get_prompt(lua_State *L, int first, char *buf, size_t size) {
  const char *p;
  lua_pushglobaltable(L);
  lua_pushstring(L, first ? "_PROMPT" : "_PROMPT2");
  lua_rawget(L, -2);
  p = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : NULL;
  snprintf(buf, size, "%s", p != NULL ? p : first ? PROMPT1 : PROMPT2);
  lua_pop(L, 2);
  return buf;
}

static int read_repl_line(struct repl *r, int first, char **line) {
  char prompt[256];
  if (!r->tty) return read_line_plain(line);
  return read_line_tty(get_prompt(r->L, first, prompt, sizeof prompt), line);
}

/* A chunk that failed only because it ended too early: read more lines. */
static int incomplete(lua_State *L, int status) {
  size_t n, m = sizeof EOF_MARK - 1;
  const char *msg;
  if (status != LUA_ERRSYNTAX) return 0;
  msg = lua_tolstring(L, -1, &n);
  return msg != NULL && n >= m && strcmp(msg + n - m, EOF_MARK) == 0;
}

/* Compile the statement text; "=expr" means "return expr". */
static int compile(lua_State *L, const char *src, size_t len) {
  int status;
  if (len > 0 && src[0] == '=') {
    lua_pushliteral(L, "return ");
    lua_pushlstring(L, src + 1, len - 1);
    lua_concat(L, 2);
    src = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    lua_remove(L, -2);
    return status;
  }
  return luaL_loadbuffer(L, src, len, "=stdin");
}

/* Read and compile one statement; push the function or the error message
** and return the load status, or STMT_EOF / STMT_NONE (Ctrl-C, nothing
** pushed).  A line is first tried as "return <line>;" so that expressions
** print their values.  *last is set when input ended inside a statement. */
static int load_statement(struct repl *r, int *last) {
  lua_State *L = r->L;
  char *line;
  int status, st = read_repl_line(r, 1, &line);
  size_t len;
  const char *src;
  if (st == LINE_EOF) return STMT_EOF;
  if (st == LINE_INTR) return STMT_NONE;
  lua_pushstring(L, line);
  free(line);
  src = lua_tolstring(L, -1, &len); /* [text] */
  if (src[0] != '=') {
    const char *ret = lua_pushfstring(L, "return %s;", src);
    status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin"); /* [text, ret, fn|err] */
    lua_remove(L, -2);
    if (status == LUA_OK) goto done;
    lua_pop(L, 1); /* [text] */
  }
  for (;;) {
    src = lua_tolstring(L, -1, &len);
    status = compile(L, src, len); /* [text, fn|err] */
    if (!incomplete(L, status)) break;
    st = read_repl_line(r, 0, &line);
    if (st == LINE_EOF) { /* report the incomplete statement, then stop */
      *last = 1;
      break;
    }
    if (st == LINE_INTR) {
      lua_pop(L, 2);
      return STMT_NONE;
    }
    lua_pop(L, 1); /* [text] */
    lua_pushliteral(L, "\n");
    lua_pushstring(L, line);
    free(line);
    lua_concat(L, 3); /* [text .. "\n" .. line] */
  }
done:
  if (r->tty) history_add(lua_tostring(L, -2)); /* one entry, however many lines */
  lua_remove(L, -2); /* [fn|err] */
  return status;
}

/* Print the values above base with the global print (__tostring: tensors,
** modules and models show their one-line summaries). */
static void print_results(lua_State *L, int base) {
  int n = lua_gettop(L) - base;
  if (n <= 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_pushglobaltable(L);
  lua_pushliteral(L, "print");
  lua_rawget(L, -2);
  lua_remove(L, -2);
  lua_insert(L, base + 1); /* [print, results...] */
  if (docall(L, n, 0) != LUA_OK) {
    const char *msg = lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1));
    print_message(msg);
    lua_pop(L, 2);
  }
}

/* Make 'llmc' a global in the REPL, as users of it expect to type
** llmc.load(...) at once; a failure is only worth a note on a terminal. */
static void preload_llmc(struct repl *r) {
  lua_State *L = r->L;
  int status;
  lua_pushglobaltable(L);
  lua_pushliteral(L, "llmc");
  status = lua_rawget(L, -2);
  lua_pop(L, 2);
  if (status != LUA_TNIL) return;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "llmc");
  status = lua_pcall(L, 1, 1, 0);
  if (status == LUA_OK) {
    lua_setglobal(L, "llmc");
    return;
  }
  if (r->tty) {
    const char *msg = lua_tostring(L, -1);
    const char *nl = msg != NULL ? strchr(msg, '\n') : NULL;
    fprintf(stderr, "%s: note: global 'llmc' not set: %.*s\n", PROGNAME,
            msg == NULL ? 0 : nl != NULL ? (int)(nl - msg) : (int)strlen(msg), msg ? msg : "");
  }
  lua_pop(L, 1);
}

static void repl(lua_State *L) {
  struct repl r;
  struct sigaction sa, old;
  int base = lua_gettop(L);
  r.L = L;
  r.tty = isatty(STDIN_FILENO);
  /* Ctrl-C outside a chunk: drop the line being edited, never exit. */
  if (r.tty && pipe2(sigint_pipe, O_CLOEXEC | O_NONBLOCK) != 0) sigint_pipe[0] = sigint_pipe[1] = -1;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint_prompt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &old);
  if (r.tty) {
    rl_readline_name = PROGNAME; /* "$if llmc" in ~/.inputrc */
    rl_instream = stdin;
    rl_outstream = stdout;
    rl_catch_signals = 0;     /* SIGINT is ours (above) */
    rl_change_environment = 0; /* leave LINES/COLUMNS out of os.getenv */
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#})[].:";
    rl_attempted_completion_function = complete;
    completion_L = L;
    history_open();
    print_version();
  }
  preload_llmc(&r);
  for (;;) {
    int last = 0, status = load_statement(&r, &last);
    if (status == STMT_EOF) break;
    if (status == STMT_NONE) continue;
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
    if (status == LUA_OK) print_results(L, base);
    else report(L, status);
    lua_settop(L, base);
    fflush(stdout);
    if (last) break;
  }
  if (r.tty) {
    fputs("\n", stdout);
    completion_free();
    completion_L = NULL;
    history_close();
  }
  fflush(stdout);
  lua_settop(L, base);
  sigaction(SIGINT, &old, NULL);
  if (sigint_pipe[0] >= 0) {
    close(sigint_pipe[0]);
    close(sigint_pipe[1]);
    sigint_pipe[0] = sigint_pipe[1] = -1;
  }
}

/* }================================================================== */

/* Runs under lua_pcall with (argc, argv); returns true on success. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script, ok = 1;
  int flags = collect_args(argv, &script);
  luaL_checkversion(L);
  if (flags == ARG_ERROR) {
    const char *bad = argv[script];
    if (bad[1] == 'e' || bad[1] == 'l')
      fprintf(stderr, "%s: '%s' needs an argument\n", PROGNAME, bad);
    else
      fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, bad);
    print_usage(stderr);
    return 0;
  }
  if (flags & ARG_H) {
    print_usage(stdout);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (flags & ARG_V) print_version();
  if (llmc_lua_openlibs(L) != 0) return lua_error(L); /* its message is on the stack */
  create_arg_table(L, argv, argc, script);
  /* With -i, a failing script still opens the REPL to inspect what it
  ** left behind (python -i); the exit status still reports the failure. */
  if (!run_args(L, argv, script)) ok = 0;
  if (ok && script < argc && handle_script(L, argv + script) != LUA_OK) ok = 0;
  if (flags & ARG_I)
    repl(L);
  else if (!ok)
    return 0;
  else if (script == argc && !(flags & (ARG_E | ARG_V))) {
    if (isatty(STDIN_FILENO)) repl(L);
    else if (dofile(L, NULL) != LUA_OK) return 0;
  }
  lua_pushboolean(L, ok);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  int status, ok;
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", PROGNAME);
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  ok = lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  return ok && status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
