/*
 * db.h - inferd's SQLite log: the models it knows and every request it
 * served, written from a thread of its own so the event loop never waits
 * on the disk.
 *
 * Schema (version in PRAGMA user_version; db_open migrates older files):
 *   models(name PRIMARY KEY, path, format, arch, params, quant, bytes,
 *          first_seen, last_loaded, last_used)        times: unix seconds
 *   requests(id INTEGER PRIMARY KEY, t_start, t_end, uid, pid, exe,
 *          model, op, prompt_tokens, gen_tokens, ttft_ms, total_ms, tok_s,
 *          finish, status, error, prompt)
 * The database runs in WAL mode with a busy timeout, so `sqlite3` readers
 * can look at it while inferd writes.
 */
#ifndef INFERD_DB_H
#define INFERD_DB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DB_SCHEMA_VERSION 2 /* user_version after migrations */
/* Request rows queued or being written at most: beyond it a row is not
 * queued but counted in db_dropped(), so a writer that cannot keep up
 * (slow disk, a reader holding a lock) never makes the daemon grow
 * without bound. 65536 rows are ~20 MB without prompts. The environment
 * variable INFERD_LOG_QUEUE_MAX overrides it (tests). */
#define DB_MAX_QUEUED 65536

typedef struct Db Db;

/* One finished request. Strings are copied by db_log_request. */
typedef struct DbRequest {
	double t_start, t_end; /* unix seconds */
	uid_t uid;             /* peer credentials at accept */
	pid_t pid;             /* the peer's process id */
	const char *exe;       /* /proc/<pid>/exe target, "" if unknown */
	const char *model;     /* "" for ops without a model */
	const char *op;        /* "generate", "load", ... */
	int prompt_tokens;     /* generate / tokenize */
	int gen_tokens;        /* generate */
	double ttft_ms;        /* arrival to first token */
	double total_ms;       /* arrival to end */
	double tok_s;          /* decode speed */
	const char *finish;    /* finish reason or "" */
	const char *status;    /* "ok" | "error" */
	const char *error;     /* message or "" */
	const char *prompt;    /* text, only with --log-prompts, else NULL */
} DbRequest;

/* One model as seen / loaded. Strings copied. */
typedef struct DbModel {
	const char *name, *path, *format, *arch, *quant; /* identity */
	uint64_t params, bytes;  /* parameters and bytes of weights */
	int loaded;              /* 1: set last_loaded to now */
	int used;                /* 1: set last_used to now */
} DbModel;

/* The result of a log query: the db thread packs the reply frame itself
 * and hands it to deliver(ctx, frame, len) (ownership of frame passes;
 * NULL with len 0 when memory ran out). */
typedef void (*db_deliver_fn)(void *ctx, uint8_t *frame, size_t len);

/* Open (creating folders and the file) and start the writer thread.
 * Returns NULL with a message. */
Db *db_open(const char *path, char *err, size_t errlen);
/* Flush what is queued, stop the thread, close. */
void db_close(Db *db);
/* Queue writes; never block on the disk. Return -1 on OOM or, for a
 * request row, a full queue (DB_MAX_QUEUED): the row is then counted as
 * dropped. */
int db_log_request(Db *db, const DbRequest *r);
int db_log_model(Db *db, const DbModel *m);
/* Request rows that could not be written so far (disk full, I/O error,
 * out of memory, the queue full): the daemon keeps serving and reports
 * this count in "status" as log_dropped. */
uint64_t db_dropped(Db *db);
/* Queue a query for the newest `limit` rows (uid's own unless all) and
 * an "ok" reply frame for request id; deliver runs on the db thread. */
int db_query_log(Db *db, uint32_t id, uid_t uid, int all, int limit,
		 db_deliver_fn deliver, void *ctx);

#endif
