/* Clock readings used across modules: one definition each. */
#ifndef PARLEY_CLOCK_H
#define PARLEY_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

/* Microseconds on clock id. */
static inline uint64_t
clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Monotonic microseconds: intervals, deadlines, lag. */
static inline uint64_t
clock_mono_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

static inline uint64_t
clock_mono_ms(void)
{
	return clock_mono_us() / 1000;
}

/* A libevent timeout of ms milliseconds. */
static inline struct timeval
timeval_ms(uint64_t ms)
{
	struct timeval tv = {
	    (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

	return tv;
}

/* Wall-clock milliseconds since the epoch: message timestamps. */
static inline int64_t
clock_real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
