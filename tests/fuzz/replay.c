/*
 * Corpus replay for make check: runs one fuzz target's
 * LLVMFuzzerTestOneInput over every file of its seed corpus (and over
 * the crashes it once found, kept there as regression inputs), printing
 * TAP.  Built with the ordinary compiler, so no libFuzzer is needed;
 * under --enable-sanitizers it replays with ASan and UBSan.
 *
 *   replay_NAME [FILE | DIR]...   (default: $top_srcdir/tests/fuzz/corpus/NAME)
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef FUZZ_NAME
#error "FUZZ_NAME must name the corpus"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count;

static int
cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
run_file(const char *path)
{
	FILE *fp;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if ((fp = fopen(path, "rb")) == NULL) {
		printf("not ok %d - %s: cannot open\n", ++count, path);
		return;
	}
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			if ((buf = realloc(buf, cap)) == NULL)
				abort();
		}
		n = fread(buf + len, 1, cap - len, fp);
		len += n;
	} while (n > 0);
	fclose(fp);
	/* Announce first: a crash then names its input. */
	printf("# %s (%zu bytes)\n", path, len);
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	printf("ok %d - %s\n", ++count, path);
	fflush(stdout);
}

static void
run_path(const char *path)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	char **names = NULL, full[4096];
	size_t n = 0, i;

	if (stat(path, &st) == -1) {
		printf("not ok %d - %s: no such file\n", ++count, path);
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		run_file(path);
		return;
	}
	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if ((names = realloc(names, (n + 1) * sizeof *names)) == NULL ||
		    (names[n] = strdup(de->d_name)) == NULL)
			abort();
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp);
	for (i = 0; i < n; i++) {
		snprintf(full, sizeof full, "%s/%s", path, names[i]);
		run_file(full);
		free(names[i]);
	}
	free(names);
}

int
main(int argc, char **argv)
{
	const char *top = getenv("top_srcdir");
	char dir[4096];
	int i;

	if (argc > 1) {
		for (i = 1; i < argc; i++)
			run_path(argv[i]);
	} else {
		snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s",
		    top ? top : ".", FUZZ_NAME);
		run_path(dir);
	}
	printf("1..%d\n", count);
	return 0;
}
