/*
** replay_main.c — runs a libFuzzer target over every file of a corpus
** directory (or the files named), so that the seed corpus and every crash
** ever found are regression tests under plain gcc and under ASan/UBSan.
*/
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "%s: cannot open\n", path); return -1; }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); return -1; }
  fclose(f);
  LLVMFuzzerTestOneInput(buf, (size_t)n);
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  int files = 0, errors = 0;
  for (int a = 1; a < argc; a++) {
    struct stat st;
    if (stat(argv[a], &st) != 0) { fprintf(stderr, "%s: missing\n", argv[a]); errors++; continue; }
    if (!S_ISDIR(st.st_mode)) { errors += run_file(argv[a]) != 0; files++; continue; }
    DIR *d = opendir(argv[a]);
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", argv[a], e->d_name);
      errors += run_file(p) != 0;
      files++;
    }
    if (d) closedir(d);
  }
  printf("replayed %d inputs\n%d passed, %d failed\n", files, files - errors, errors);
  return errors || files == 0;
}
