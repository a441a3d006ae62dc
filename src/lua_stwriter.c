/*
** lua_stwriter.c — the "llmc._stwriter" module: the streaming safetensors
** writer of safetensors.h (declare every tensor, begin, write in any order,
** finish) and the few file-system calls that an atomic checkpoint save
** needs and Lua lacks (mkdir, listing, recursive removal, copies, free
** space, a monotonic clock).  Used by lua/llmc/save.lua and
** lua/llmc/model_free.lua; "llmc._safetensors".save is the one-call writer.
**
**   local W = require "llmc._stwriter"
**   local w = W.writer("out/model.safetensors")        -- max_shard_size 0: one file
**   w:metadata("format", "pt")
**   w:declare("a", "bfloat16", {4, 8})
**   w:begin()                      -- reserves the space: a full disk fails here
**   w:write("a", tensor)           -- any order; a tensor at a time
**   local files = w:finish()       -- fsync + rename; {"out/model.safetensors"}
**   W.mkdir("d"); W.listdir("d"); W.rmtree("d"); W.copy_file(a, b); W.free_space(".")
**
** A Writer userdata (metatable "llmc.StWriter") owns its llmc_st_writer;
** :abort() and __gc remove the temporaries of an unfinished write.
** File-system functions raise a Lua error naming the path on failure,
** except exists / is_dir which return booleans.
**
** SIGXFSZ is ignored when the module opens: with a file-size limit
** (ulimit -f) a write beyond it then fails with EFBIG, which the writer
** reports, instead of killing the process with a half-written output.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "lua_llmc.h"
#include "lua_tensor.h"
#include "safetensors.h"

int luaopen_llmc_stwriter(lua_State *L);

#define WRITER_MT "llmc.StWriter"

typedef struct { llmc_st_writer *w; int finished; } writer_box;

static writer_box *check_writer(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
  if (!b->w) luaL_error(L, "StWriter is closed");
  return b;
}

/* writer(path [, max_shard_size]) */
static int w_new(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  if (max < 0) return luaL_argerror(L, 2, "max_shard_size must be >= 0");
  writer_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->w = NULL;
  b->finished = 0;
  luaL_setmetatable(L, WRITER_MT);
  b->w = llmc_st_writer_new(path, (uint64_t)max);
  if (!b->w) return llmc_lua_error(L, NULL);
  return 1;
}

static int w_metadata(lua_State *L) {
  writer_box *b = check_writer(L);
  if (llmc_st_writer_set_metadata(b->w, luaL_checkstring(L, 2), luaL_checkstring(L, 3)) < 0)
    return llmc_lua_error(L, NULL);
  return 0;
}

/* declare(name, dtype, shape) */
static int w_declare(lua_State *L) {
  writer_box *b = check_writer(L);
  const char *name = luaL_checkstring(L, 2);
  llmc_dtype dt = llmc_lua_checkdtype(L, 3);
  luaL_checktype(L, 4, LUA_TTABLE);
  int64_t shape[LLMC_MAX_DIMS];
  int nd = llmc_lua_checkshape(L, 4, shape);
  if (llmc_st_writer_declare(b->w, name, dt, nd, shape) < 0) return llmc_lua_error(L, NULL);
  return 0;
}

static int w_begin(lua_State *L) {
  writer_box *b = check_writer(L);
  if (llmc_st_writer_begin(b->w) < 0) return llmc_lua_error(L, NULL);
  return 0;
}

/* write(name, tensor) or write(name, bytes_string) */
static int w_write(lua_State *L) {
  writer_box *b = check_writer(L);
  const char *name = luaL_checkstring(L, 2);
  int rc;
  if (lua_type(L, 3) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 3, &n);
    rc = llmc_st_writer_write(b->w, name, s, n);
  } else {
    rc = llmc_st_writer_write_tensor(b->w, name, llmc_lua_checktensor(L, 3));
  }
  if (rc < 0) return llmc_lua_error(L, NULL);
  return 0;
}

static void push_shards(lua_State *L, llmc_st_writer *w) {
  size_t ns = llmc_st_writer_nshards(w);
  lua_createtable(L, (int)ns, 0);
  for (size_t i = 0; i < ns; i++) {
    lua_pushstring(L, llmc_st_writer_shard_path(w, i));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int w_finish(lua_State *L) {
  writer_box *b = check_writer(L);
  if (llmc_st_writer_finish(b->w) < 0) return llmc_lua_error(L, NULL);
  b->finished = 1;
  push_shards(L, b->w);
  llmc_st_writer_free(b->w);
  b->w = NULL;
  return 1;
}

static int w_shards(lua_State *L) {
  writer_box *b = check_writer(L);
  push_shards(L, b->w);
  return 1;
}

static int w_abort(lua_State *L) {
  writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
  llmc_st_writer_free(b->w);   /* removes the temporaries when unfinished */
  b->w = NULL;
  return 0;
}

/* ---- file system ------------------------------------------------------------- */

static int fs_fail(lua_State *L, const char *op, const char *path) {
  return luaL_error(L, "%s %s: %s", op, path, strerror(errno));
}

static int fs_exists(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
  return 1;
}

static int fs_is_dir(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
  return 1;
}

/* file_size(path) -> bytes */
static int fs_file_size(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(p, &st) != 0) return fs_fail(L, "stat", p);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 1;
}

/* mkdir(path [, exist_ok]) */
static int fs_mkdir(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  int ok = lua_toboolean(L, 2);
  if (mkdir(p, 0777) != 0) {
    struct stat st;
    if (!(ok && errno == EEXIST && stat(p, &st) == 0 && S_ISDIR(st.st_mode))) return fs_fail(L, "mkdir", p);
  }
  return 0;
}

/* mkdir_p(path): every missing parent too */
static int fs_mkdir_p(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  char *buf = lua_newuserdatauv(L, n + 1, 0);
  memcpy(buf, p, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      struct stat st;
      if (stat(buf, &st) != 0) {
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return fs_fail(L, "mkdir", buf);
      } else if (!S_ISDIR(st.st_mode)) {
        return luaL_error(L, "mkdir %s: exists and is not a directory", buf);
      }
      buf[i] = c;
    }
  }
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* listdir(path) -> sorted array of entry names (no "." / "..") */
static int fs_listdir(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  DIR *d = opendir(p);
  if (!d) return fs_fail(L, "listdir", p);
  lua_newtable(L);
  int n = 0;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, -2, ++n);
  }
  int err = errno;
  closedir(d);
  if (err) { errno = err; return fs_fail(L, "listdir", p); }
  /* sort through a C array of the (anchored) strings */
  const char **v = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *v, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -2, i + 1);
    v[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  qsort(v, (size_t)n, sizeof *v, cmp_str);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* remove a tree without following symbolic links; returns 0 or -1 (errno) */
static int rmtree(const char *p) {
  struct stat st;
  if (lstat(p, &st) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(st.st_mode)) return unlink(p);
  DIR *d = opendir(p);
  if (!d) return -1;
  struct dirent *e;
  int rc = 0;
  size_t lp = strlen(p);
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    size_t len = lp + strlen(e->d_name) + 2;
    char *c = malloc(len);
    if (!c) { rc = -1; errno = ENOMEM; break; }
    snprintf(c, len, "%s/%s", p, e->d_name);
    if (rmtree(c) != 0) rc = -1;
    free(c);
  }
  closedir(d);
  if (rc == 0 && rmdir(p) != 0) rc = -1;
  return rc;
}

static int fs_rmtree(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  if (rmtree(p) != 0) return fs_fail(L, "remove", p);
  return 0;
}

static int fs_rename(lua_State *L) {
  const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
  if (rename(a, b) != 0) return luaL_error(L, "rename %s -> %s: %s", a, b, strerror(errno));
  return 0;
}

/* copy_file(src, dst): bytes and mode; dst is written in place then fsynced */
static int fs_copy_file(lua_State *L) {
  const char *s = luaL_checkstring(L, 1), *d = luaL_checkstring(L, 2);
  int in = open(s, O_RDONLY | O_CLOEXEC);
  if (in < 0) return fs_fail(L, "open", s);
  struct stat st;
  if (fstat(in, &st) != 0) { close(in); return fs_fail(L, "stat", s); }
  int out = open(d, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 0777);
  if (out < 0) { close(in); return fs_fail(L, "create", d); }
  char *buf = malloc(1 << 20);
  int rc = buf ? 0 : -1;
  const char *what = "copy to";
  while (rc == 0) {
    ssize_t k = read(in, buf, 1 << 20);
    if (k < 0) { if (errno == EINTR) continue; rc = -1; what = "read"; break; }
    if (k == 0) break;
    for (ssize_t off = 0; off < k;) {
      ssize_t m = write(out, buf + off, (size_t)(k - off));
      if (m < 0) { if (errno == EINTR) continue; rc = -1; break; }
      off += m;
    }
  }
  if (rc == 0 && fsync(out) != 0) rc = -1;
  int err = errno;
  free(buf);
  close(in);
  if (close(out) != 0 && rc == 0) { rc = -1; err = errno; }
  if (rc != 0) {
    unlink(d);
    errno = err;
    return fs_fail(L, what, rc != 0 && strcmp(what, "read") == 0 ? s : d);
  }
  return 0;
}

/* fsync_dir(path): make renames inside a directory durable */
static int fs_fsync_dir(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fs_fail(L, "open", p);
  fsync(fd);   /* best effort: some file systems refuse fsync on directories */
  close(fd);
  return 0;
}

/* free_space(path) -> bytes available to an unprivileged user */
static int fs_free_space(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  struct statvfs v;
  if (statvfs(p, &v) != 0) return fs_fail(L, "statvfs", p);
  lua_pushinteger(L, (lua_Integer)((uint64_t)v.f_bavail * (uint64_t)v.f_frsize));
  return 1;
}

/* realpath(path) -> absolute path */
static int fs_realpath(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  char *r = realpath(p, NULL);
  if (!r) return fs_fail(L, "realpath", p);
  lua_pushstring(L, r);
  free(r);
  return 1;
}

/* now() -> seconds from a monotonic clock (for durations) */
static int fs_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
  return 1;
}

static int fs_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* isatty(fd) -> boolean (1 = stdout, 2 = stderr) */
static int fs_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* peak_rss() -> the process's peak resident set size in bytes (VmHWM) */
static int fs_peak_rss(lua_State *L) {
  FILE *f = fopen("/proc/self/status", "r");
  lua_Integer kb = -1;
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f))
      if (strncmp(line, "VmHWM:", 6) == 0) { kb = strtoll(line + 6, NULL, 10); break; }
    fclose(f);
  }
  if (kb < 0) lua_pushnil(L);
  else lua_pushinteger(L, kb * 1024);
  return 1;
}

/* tune_malloc([threshold_bytes]): serve allocations of at least `threshold`
** (default 1 MiB) with mmap, so that a freed tensor goes back to the
** system at once.  glibc's default raises the threshold dynamically up to
** 32 MiB after the first large free, after which streamed tensors of that
** size are carved from per-thread heaps and the resident set keeps growing
** (seen as a 1.6 GB peak on a 2 GB model_free_ptq run instead of 0.6 GB). */
static int fs_tune_malloc(lua_State *L) {
  lua_Integer t = luaL_optinteger(L, 1, 1 << 20);
  lua_pushboolean(L, mallopt(M_MMAP_THRESHOLD, (int)t) == 1);
  return 1;
}

static const luaL_Reg writer_methods[] = {
  {"metadata", w_metadata}, {"declare", w_declare}, {"begin", w_begin}, {"write", w_write},
  {"finish", w_finish}, {"shards", w_shards}, {"abort", w_abort}, {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"writer", w_new}, {"exists", fs_exists}, {"is_dir", fs_is_dir}, {"file_size", fs_file_size},
  {"mkdir", fs_mkdir}, {"mkdir_p", fs_mkdir_p}, {"listdir", fs_listdir}, {"rmtree", fs_rmtree},
  {"rename", fs_rename}, {"copy_file", fs_copy_file}, {"fsync_dir", fs_fsync_dir},
  {"free_space", fs_free_space}, {"realpath", fs_realpath}, {"now", fs_now},
  {"getpid", fs_getpid}, {"isatty", fs_isatty}, {"peak_rss", fs_peak_rss},
  {"tune_malloc", fs_tune_malloc}, {NULL, NULL}};

int luaopen_llmc_stwriter(lua_State *L) {
  signal(SIGXFSZ, SIG_IGN);
  luaL_requiref(L, "llmc._tensor", luaopen_llmc_tensor, 0);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, WRITER_MT)) {
    luaL_newlib(L, writer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, w_abort);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, w_abort);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
