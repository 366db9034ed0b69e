/*
 * metrics.h - what inferd counts about finished requests, for the
 * `metrics` operation: request, prompt-token and generated-token counters
 * per model, operation, user and outcome, and per-model histograms of
 * time to first token and decode speed, rendered in the Prometheus text
 * exposition format (version 0.0.4). Gauges that describe the present
 * (queues, memory, connections) are written by server.c, which owns that
 * state. Used by the loop thread only, so there is no locking.
 */
#ifndef INFERD_METRICS_H
#define INFERD_METRICS_H

#include <stdio.h>
#include <sys/types.h>

#define METRICS_MAX_SERIES 1024 /* counter series kept; later ones fold into uid "other" */
#define METRICS_MAX_MODELS 80   /* histogram sets (models seen, "" included) */
#define METRICS_NAME 72         /* model name bytes kept (names are <= 64) */

typedef struct Metrics Metrics;

Metrics *metrics_new(void);
void metrics_free(Metrics *m);

/* One finished request. model "" when it named none (or an unknown one);
 * ttft < 0 and tok_s <= 0 when they do not apply (not a generate, or no
 * token came out). */
void metrics_request(Metrics *m, const char *model, const char *op, uid_t uid,
		     int ok, int prompt_tokens, int gen_tokens, double ttft,
		     double tok_s);

/* Append the counters and histograms to out. */
void metrics_render(const Metrics *m, FILE *out);

/* Write s as a Prometheus label value (escapes \ " and newline). */
void metrics_label(FILE *out, const char *s);

#endif
