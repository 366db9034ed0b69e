/*
 * db.c - the SQLite log on its own thread. See db.h.
 */
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db.h"
#include "frame.h"
#include "protocol.h"

enum { JOB_REQUEST, JOB_MODEL, JOB_QUERY };

/* A queued write or query; strings are owned copies. */
typedef struct Job {
	int kind;               /* JOB_* */
	DbRequest r;            /* JOB_REQUEST (strings point into store) */
	DbModel m;              /* JOB_MODEL (likewise) */
	char *store[8];         /* owned copies of the strings above */
	uint32_t id;            /* JOB_QUERY: request id */
	uid_t uid;              /* JOB_QUERY: whose rows */
	int all, limit;         /* JOB_QUERY: every user's, how many */
	db_deliver_fn deliver;  /* JOB_QUERY: hand the reply back */
	void *ctx;              /* for deliver */
	struct Job *next;       /* queue link */
} Job;

struct Db {
	sqlite3 *h;             /* the connection (used by the thread only) */
	sqlite3_stmt *ins;      /* the request INSERT, prepared once: under
				 * load the writer must outpace the loop */
	pthread_t thread;       /* writer */
	pthread_mutex_t mu;     /* guards the queue and stop */
	pthread_cond_t cv;      /* signalled on a new job or stop */
	Job *head, *tail;       /* FIFO */
	int stop;               /* 1: drain and exit */
	uint64_t dropped;       /* request rows not written (disk full, I/O
				 * error, out of memory, queue full); guarded
				 * by mu */
	long nq;                /* request rows queued or being written
				 * (under mu) */
	long max_q;             /* their cap: DB_MAX_QUEUED */
	int full;               /* rows are being dropped (told once) */
};

/* Migrations: step i brings user_version from i to i + 1. */
static const char *const migrations[DB_SCHEMA_VERSION] = {
	"CREATE TABLE IF NOT EXISTS models(name TEXT PRIMARY KEY, path TEXT,"
	" format TEXT, arch TEXT, params INTEGER, quant TEXT, bytes INTEGER,"
	" first_seen REAL, last_loaded REAL, last_used REAL);"
	"CREATE TABLE IF NOT EXISTS requests(id INTEGER PRIMARY KEY,"
	" t_start REAL, t_end REAL, uid INTEGER, pid INTEGER, exe TEXT,"
	" model TEXT, op TEXT, prompt_tokens INTEGER, gen_tokens INTEGER,"
	" ttft_ms REAL, total_ms REAL, tok_s REAL, finish TEXT, status TEXT,"
	" error TEXT);",
	/* 2: prompt text (only with --log-prompts) and an index for `log` */
	"ALTER TABLE requests ADD COLUMN prompt TEXT;"
	"CREATE INDEX IF NOT EXISTS requests_uid ON requests(uid, id);",
};

static double now_unix(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* mkdir -p of the folders above path. */
static int make_parents(const char *path, char *err, size_t errlen)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
		snprintf(err, errlen, "database path too long");
		return -1;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", buf, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static void job_free(Job *j)
{
	for (int i = 0; i < 8; i++)
		free(j->store[i]);
	free(j);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

/* Returns 0, or -1 when the row was not written. */
static int write_request(Db *db, const DbRequest *r)
{
	int rc = 0;
	if (!db->ins && sqlite3_prepare_v2(db->h,
		"INSERT INTO requests(t_start,t_end,uid,pid,exe,model,op,"
		"prompt_tokens,gen_tokens,ttft_ms,total_ms,tok_s,finish,status,"
		"error,prompt) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1,
		&db->ins, NULL) != SQLITE_OK) {
		fprintf(stderr, "inferd: db: %s\n", sqlite3_errmsg(db->h));
		db->ins = NULL;
		return -1;
	}
	sqlite3_stmt *st = db->ins;
	sqlite3_bind_double(st, 1, r->t_start);
	sqlite3_bind_double(st, 2, r->t_end);
	sqlite3_bind_int64(st, 3, r->uid);
	sqlite3_bind_int64(st, 4, r->pid);
	bind_text(st, 5, r->exe);
	bind_text(st, 6, r->model);
	bind_text(st, 7, r->op);
	sqlite3_bind_int(st, 8, r->prompt_tokens);
	sqlite3_bind_int(st, 9, r->gen_tokens);
	sqlite3_bind_double(st, 10, r->ttft_ms);
	sqlite3_bind_double(st, 11, r->total_ms);
	sqlite3_bind_double(st, 12, r->tok_s);
	bind_text(st, 13, r->finish);
	bind_text(st, 14, r->status);
	bind_text(st, 15, r->error);
	bind_text(st, 16, r->prompt);
	if (sqlite3_step(st) != SQLITE_DONE) {
		fprintf(stderr, "inferd: db insert: %s\n", sqlite3_errmsg(db->h));
		rc = -1;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

static void write_model(Db *db, const DbModel *m)
{
	sqlite3_stmt *st;
	double now = now_unix();
	if (sqlite3_prepare_v2(db->h,
		"INSERT INTO models(name,path,format,arch,params,quant,bytes,"
		"first_seen,last_loaded,last_used) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,"
		"?9,?10) ON CONFLICT(name) DO UPDATE SET path=?2, format=?3,"
		" arch=coalesce(nullif(?4,''),arch),"
		" params=coalesce(nullif(?5,0),params),"
		" quant=coalesce(nullif(?6,''),quant), bytes=?7,"
		" last_loaded=coalesce(?9,last_loaded),"
		" last_used=coalesce(?10,last_used)", -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "inferd: db: %s\n", sqlite3_errmsg(db->h));
		return;
	}
	bind_text(st, 1, m->name);
	bind_text(st, 2, m->path);
	bind_text(st, 3, m->format);
	bind_text(st, 4, m->arch ? m->arch : "");
	sqlite3_bind_int64(st, 5, (sqlite3_int64)m->params);
	bind_text(st, 6, m->quant ? m->quant : "");
	sqlite3_bind_int64(st, 7, (sqlite3_int64)m->bytes);
	sqlite3_bind_double(st, 8, now);
	if (m->loaded)
		sqlite3_bind_double(st, 9, now);
	else
		sqlite3_bind_null(st, 9);
	if (m->used)
		sqlite3_bind_double(st, 10, now);
	else
		sqlite3_bind_null(st, 10);
	if (sqlite3_step(st) != SQLITE_DONE)
		fprintf(stderr, "inferd: db model: %s\n", sqlite3_errmsg(db->h));
	sqlite3_finalize(st);
}

/* Run a log query and pack the reply frame: {id, type:"ok", rows:[...]}. */
static void run_query(Db *db, const Job *j)
{
	static const char *const cols[] = {
		"id", "t_start", "t_end", "uid", "pid", "exe", "model", "op",
		"prompt_tokens", "gen_tokens", "ttft_ms", "total_ms", "tok_s",
		"finish", "status", "error",
	};
	const int ncols = (int)(sizeof cols / sizeof cols[0]);
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->h,
		j->all ? "SELECT id,t_start,t_end,uid,pid,exe,model,op,"
			 "prompt_tokens,gen_tokens,ttft_ms,total_ms,tok_s,finish,"
			 "status,error FROM requests ORDER BY id DESC LIMIT ?1"
		       : "SELECT id,t_start,t_end,uid,pid,exe,model,op,"
			 "prompt_tokens,gen_tokens,ttft_ms,total_ms,tok_s,finish,"
			 "status,error FROM requests WHERE uid=?2 ORDER BY id "
			 "DESC LIMIT ?1", -1, &st, NULL);
	/* rows are packed into a second buffer first: the count comes first */
	msgpack_sbuffer rows;
	msgpack_packer rpk;
	msgpack_sbuffer_init(&rows);
	msgpack_packer_init(&rpk, &rows, msgpack_sbuffer_write);
	uint32_t n = 0;
	if (rc == SQLITE_OK) {
		sqlite3_bind_int(st, 1, j->limit);
		if (!j->all)
			sqlite3_bind_int64(st, 2, j->uid);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
		       rows.size < PROTO_MAX_FRAME / 2) {
			msgpack_pack_map(&rpk, (size_t)ncols);
			for (int c = 0; c < ncols; c++) {
				frame_str(&rpk, cols[c]);
				switch (sqlite3_column_type(st, c)) {
				case SQLITE_INTEGER:
					msgpack_pack_int64(&rpk, sqlite3_column_int64(st, c));
					break;
				case SQLITE_FLOAT:
					msgpack_pack_double(&rpk, sqlite3_column_double(st, c));
					break;
				case SQLITE_TEXT:
					frame_str(&rpk, (const char *)sqlite3_column_text(st, c));
					break;
				default:
					msgpack_pack_nil(&rpk);
				}
			}
			n++;
		}
		sqlite3_finalize(st);
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	frame_reply(&sb, &pk, j->id, "ok", 1);
	frame_str(&pk, "rows");
	msgpack_pack_array(&pk, n);
	msgpack_sbuffer_write(&sb, rows.data, rows.size);
	msgpack_sbuffer_destroy(&rows);
	size_t len;
	uint8_t *frame = frame_end(&sb, &len);
	j->deliver(j->ctx, frame, len);
}

static void *db_thread(void *arg)
{
	Db *db = arg;
	pthread_mutex_lock(&db->mu);
	for (;;) {
		while (!db->head && !db->stop)
			pthread_cond_wait(&db->cv, &db->mu);
		if (!db->head && db->stop)
			break;
		/* take the whole queue and write it in one transaction */
		Job *batch = db->head;
		db->head = db->tail = NULL;
		pthread_mutex_unlock(&db->mu);
		uint64_t nreq = 0, failed = 0;
		sqlite3_exec(db->h, "BEGIN", NULL, NULL, NULL);
		for (Job *j = batch; j; j = j->next)
			if (j->kind == JOB_REQUEST) {
				nreq++;
				failed += write_request(db, &j->r) < 0;
			} else if (j->kind == JOB_MODEL) {
				write_model(db, &j->m);
			}
		if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			/* disk full or I/O error: the batch is lost; end the
			 * transaction, or every later BEGIN would fail and the
			 * rows pile up in one that never commits */
			fprintf(stderr, "inferd: db commit: %s; %llu rows lost\n",
				sqlite3_errmsg(db->h), (unsigned long long)nreq);
			if (!sqlite3_get_autocommit(db->h))
				sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
			failed = nreq;
		}
		while (batch) {
			Job *j = batch;
			batch = j->next;
			if (j->kind == JOB_QUERY)
				run_query(db, j);
			job_free(j);
		}
		pthread_mutex_lock(&db->mu);
		db->dropped += failed;
		db->nq -= (long)nreq;
		if (db->full && db->nq < db->max_q / 2) {
			fprintf(stderr, "inferd: log queue below %ld rows again; "
				"%llu rows dropped so far\n", db->max_q / 2,
				(unsigned long long)db->dropped);
			db->full = 0;
		}
	}
	pthread_mutex_unlock(&db->mu);
	return NULL;
}

Db *db_open(const char *path, char *err, size_t errlen)
{
	if (make_parents(path, err, errlen) < 0)
		return NULL;
	Db *db = calloc(1, sizeof *db);
	if (!db) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE |
			    SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "sqlite open %s: %s", path,
			 db->h ? sqlite3_errmsg(db->h) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(db->h, 5000);
	char *msg = NULL;
	if (sqlite3_exec(db->h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
			 NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, msg ? msg : "pragma failed");
		sqlite3_free(msg);
		goto fail;
	}
	sqlite3_stmt *st;
	int ver = 0;
	if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			ver = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (ver > DB_SCHEMA_VERSION) {
		snprintf(err, errlen, "%s has schema version %d, newer than this "
			 "inferd's %d", path, ver, DB_SCHEMA_VERSION);
		goto fail;
	}
	for (; ver < DB_SCHEMA_VERSION; ver++) {
		char sql[64];
		snprintf(sql, sizeof sql, "PRAGMA user_version=%d", ver + 1);
		if (sqlite3_exec(db->h, "BEGIN", NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db->h, migrations[ver], NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(db->h, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(err, errlen, "%s: migration to schema %d: %s", path,
				 ver + 1, msg ? msg : "failed");
			sqlite3_free(msg);
			goto fail;
		}
	}
	const char *mq = getenv("INFERD_LOG_QUEUE_MAX");
	db->max_q = mq && atol(mq) > 0 ? atol(mq) : DB_MAX_QUEUED;
	pthread_mutex_init(&db->mu, NULL);
	pthread_cond_init(&db->cv, NULL);
	if (pthread_create(&db->thread, NULL, db_thread, db) != 0) {
		snprintf(err, errlen, "cannot start the database thread");
		goto fail;
	}
	return db;
fail:
	sqlite3_close(db->h);
	free(db);
	return NULL;
}

void db_close(Db *db)
{
	if (!db)
		return;
	pthread_mutex_lock(&db->mu);
	db->stop = 1;
	pthread_cond_signal(&db->cv);
	pthread_mutex_unlock(&db->mu);
	pthread_join(db->thread, NULL);
	sqlite3_finalize(db->ins);
	sqlite3_close(db->h);
	pthread_mutex_destroy(&db->mu);
	pthread_cond_destroy(&db->cv);
	free(db);
}

static void push(Db *db, Job *j)
{
	pthread_mutex_lock(&db->mu);
	if (db->tail)
		db->tail->next = j;
	else
		db->head = j;
	db->tail = j;
	pthread_cond_signal(&db->cv);
	pthread_mutex_unlock(&db->mu);
}

/* Copy s into the job's store slot i and return the copy. */
static const char *keep(Job *j, int i, const char *s, int *oom)
{
	if (!s)
		return NULL;
	j->store[i] = strdup(s);
	if (!j->store[i])
		*oom = 1;
	return j->store[i];
}

/* Count a request row in the queue: 0, or -1 (counted as dropped) when
 * the writer is behind by the whole cap. */
static int reserve_row(Db *db)
{
	int rc = 0;
	pthread_mutex_lock(&db->mu);
	if (db->nq >= db->max_q) {
		db->dropped++;
		if (!db->full)
			fprintf(stderr, "inferd: log queue full (%ld rows): "
				"dropping rows, counted in log_dropped\n",
				db->max_q);
		db->full = 1;
		rc = -1;
	} else {
		db->nq++;
	}
	pthread_mutex_unlock(&db->mu);
	return rc;
}

int db_log_request(Db *db, const DbRequest *r)
{
	if (reserve_row(db) < 0)
		return -1;
	Job *j = calloc(1, sizeof *j);
	int oom = !j;
	if (j) {
		j->kind = JOB_REQUEST;
		j->r = *r;
		j->r.exe = keep(j, 0, r->exe, &oom);
		j->r.model = keep(j, 1, r->model, &oom);
		j->r.op = keep(j, 2, r->op, &oom);
		j->r.finish = keep(j, 3, r->finish, &oom);
		j->r.status = keep(j, 4, r->status, &oom);
		j->r.error = keep(j, 5, r->error, &oom);
		j->r.prompt = keep(j, 6, r->prompt, &oom);
	}
	if (oom) {
		if (j)
			job_free(j);
		pthread_mutex_lock(&db->mu);
		db->dropped++;
		db->nq--; /* reserved, never queued */
		pthread_mutex_unlock(&db->mu);
		return -1;
	}
	push(db, j);
	return 0;
}

uint64_t db_dropped(Db *db)
{
	pthread_mutex_lock(&db->mu);
	uint64_t n = db->dropped;
	pthread_mutex_unlock(&db->mu);
	return n;
}

int db_log_model(Db *db, const DbModel *m)
{
	Job *j = calloc(1, sizeof *j);
	int oom = 0;
	if (!j)
		return -1;
	j->kind = JOB_MODEL;
	j->m = *m;
	j->m.name = keep(j, 0, m->name, &oom);
	j->m.path = keep(j, 1, m->path, &oom);
	j->m.format = keep(j, 2, m->format, &oom);
	j->m.arch = keep(j, 3, m->arch, &oom);
	j->m.quant = keep(j, 4, m->quant, &oom);
	if (oom) {
		job_free(j);
		return -1;
	}
	push(db, j);
	return 0;
}

int db_query_log(Db *db, uint32_t id, uid_t uid, int all, int limit,
		 db_deliver_fn deliver, void *ctx)
{
	Job *j = calloc(1, sizeof *j);
	if (!j)
		return -1;
	j->kind = JOB_QUERY;
	j->id = id;
	j->uid = uid;
	j->all = all;
	j->limit = limit;
	j->deliver = deliver;
	j->ctx = ctx;
	push(db, j);
	return 0;
}
