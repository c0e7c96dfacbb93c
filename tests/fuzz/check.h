/*
 * CHECK(cond): the fuzzers' assertion.  Not assert(3): it must hold in
 * every build, NDEBUG or not, and a failure must reach libFuzzer as a
 * crash (abort) with the condition named on stderr.
 */
#ifndef PARLEY_FUZZ_CHECK_H
#define PARLEY_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c) \
	do { \
		if (!(c)) { \
			fprintf(stderr, "fuzz: %s:%d: %s\n", __FILE__, \
			    __LINE__, #c); \
			abort(); \
		} \
	} while (0)

#endif
