/*
 * daemon.h - inferd's insides: configuration, the loop's objects
 * (connections, requests) and the model workers.
 *
 * Threads: one libevent loop (server.c) owns connections and every
 * Request's life; one worker thread per known model (worker.c) owns that
 * model's Engine and runs load / generate / tokenize jobs in order; the
 * database thread (db.c) writes the log. Workers and the db thread talk
 * back only by pushing Events (ready-made reply frames) onto the loop's
 * queue and writing its eventfd. A Request is freed by the loop when its
 * final Event arrives, never by a worker, so a worker can use it until it
 * pushes that event.
 */
#ifndef INFERD_DAEMON_H
#define INFERD_DAEMON_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "db.h"
#include "engine.h"
#include "protocol.h"

#define INFERD_VERSION "0.1.0"    /* daemon version reported by status */
#define INFERD_MAX_MODELS 64      /* --model flags plus models-dir entries */
#define DAEMON_MAX_BATCH 256      /* largest --max-batch */
#define PRIO_MAX_ABS 10           /* generate priorities are -10..10 */

/* A --model NAME=PATH. */
typedef struct ModelSpec {
	const char *name; /* as clients name it */
	const char *path; /* HF directory or GGUF file */
} ModelSpec;

typedef struct DaemonConfig {
	const char *socket_path;   /* NULL = default */
	int socket_mode;           /* permissions of the socket (0600) */
	const char *socket_group;  /* chgrp the socket to it, or NULL */
	const char *db_path;       /* NULL = $XDG_STATE_HOME/inferd/inferd.db */
	const char *log_file;      /* daemon messages (stderr when NULL) */
	int log_prompts;           /* store prompt text in the request log */
	ModelSpec models[INFERD_MAX_MODELS]; /* from --model */
	int n_models;              /* how many */
	const char *models_dir;    /* scanned for *.gguf and HF folders */
	uint64_t mem_budget;       /* bytes of loaded models; 0 = no limit */
	int keep_alive;            /* default idle seconds before unload; -1 never */
	int shutdown_timeout;      /* seconds to drain on SIGTERM */
	int exit_idle;             /* exit after this many seconds without
				    * clients (socket activation); 0 never */
	int max_queue;             /* waiting requests per model */
	int max_batch;             /* generates running together per model */
	int batch_tokens;          /* rows of one batched forward pass (0 = 512) */
	int max_conn_requests;     /* in flight per connection */
	int max_uid_requests;      /* in flight per user */
	int max_connections;       /* open connections at once */
	int max_tokens;            /* default max_tokens of a generate */
	EngineOptions eng;         /* backend, threads, ctx */
} DaemonConfig;

void daemon_config_default(DaemonConfig *c);
/* Run until SIGTERM/SIGINT or a shutdown op. Returns 0, or -1 with a
 * message when it could not start. */
int daemon_run(const DaemonConfig *cfg, char *err, size_t errlen);

/* ---- shared between server.c and worker.c ---- */

enum { OP_HELLO, OP_PING, OP_STATUS, OP_MODELS, OP_LOAD, OP_UNLOAD,
       OP_GENERATE, OP_TOKENIZE, OP_DETOKENIZE, OP_CANCEL, OP_LOG,
       OP_SHUTDOWN, OP_METRICS, OP_COUNT };
extern const char *const op_names[OP_COUNT];

enum { MS_UNLOADED, MS_LOADING, MS_LOADED }; /* Slot.state */

struct Conn;
struct Daemon;

typedef struct Request {
	uint32_t id;               /* client's request id */
	struct Daemon *d;          /* the daemon (for replies from db) */
	int op;                    /* OP_* */
	struct Conn *conn;         /* NULL once the client went away */
	struct Request *cnext;     /* in the connection's list */
	struct Request *qnext;     /* in a model's job queue */
	struct Slot *model;        /* model the job runs on */
	atomic_int cancel;         /* set by the loop, read by the worker */
	int internal;              /* idle unload: no client, no reply */
	/* inputs (owned) */
	char *text;                /* prompt / text to tokenize */
	size_t text_len;           /* its bytes */
	int32_t *ids;              /* tokens to detokenize */
	int n_ids;                 /* how many */
	int add_bos, special;      /* tokenize flags */
	GenParams gp;              /* generate parameters */
	char *stop[ENGINE_MAX_STOP]; /* owned stop strings (gp.stop points here) */
	int keep_alive;            /* seconds, or -2 = model default */
	int priority;              /* generate: higher starts first (0 default;
				    * > 0 only for admins) */
	char **roles, **contents;  /* chat messages (owned), or NULL */
	int n_msgs;                /* how many */
	char *system;              /* system prompt for chat, or NULL */
	char *tmpl;                /* chat template name or file, or NULL */
	uid_t uid;                 /* who asked: SO_PEERCRED of the connection */
	pid_t pid;                 /* its process */
	char exe[256];             /* its executable, "" if unreadable */
	/* outcome, filled by the worker before the final event */
	double t_start;            /* arrival (monotonic seconds) */
	double t_start_unix;       /* arrival (wall clock) */
	int n_prompt, n_gen;       /* token counts */
	double ttft, t_total;      /* seconds */
	double tok_s;              /* decode tokens/s */
	char finish[16];           /* finish reason */
	char error[256];           /* error message, "" when ok */
	/* scheduling (worker.c); the loop reads the atomics for ps */
	int qpos_told;             /* worker: queue position last sent + 1,
				    * 0 = none sent */
	atomic_int sched_state;    /* REQ_QUEUED, REQ_RUNNING */
	atomic_int sched_pos;      /* queue position while queued */
	atomic_int live_gen;       /* tokens generated so far */
} Request;

enum { REQ_QUEUED = 0, REQ_RUNNING = 1 }; /* Request.sched_state */

/* A model inferd knows, loaded or not, and its worker. */
typedef struct Slot {
	char name[PROTO_MAX_NAME + 1]; /* client-visible name */
	char path[PATH_MAX];       /* where it lives */
	const char *format;        /* "gguf" or "hf" */
	uint64_t est_bytes;        /* the budget charge: weights on disk, the
				    * engine's KV cache, the batch's KV pool */
	uint64_t pool_bytes;       /* of which the batch's KV pool (while it
				    * exists) */
	struct Daemon *d;          /* owner */
	pthread_t thread;          /* the worker */
	pthread_mutex_t mu;        /* guards everything below */
	pthread_cond_t cv;         /* a job arrived / stop */
	Request *qhead, *qtail;    /* waiting jobs */
	int qlen;                  /* their count */
	Request *running;          /* job in progress or NULL */
	int state;                 /* MS_* */
	int stop;                  /* worker should exit */
	atomic_int abort;          /* stop the running generation (exit) */
	double last_used;          /* monotonic seconds of the last job's end */
	int keep_alive;            /* seconds idle before unload; -1 never */
	/* filled after a load (under mu) */
	char arch[32], quant[16];  /* from the engine's Model */
	uint64_t params;           /* parameter count */
	int ctx;                   /* KV capacity */
	double load_ms;            /* last load time */
	char device[128];          /* backend's description, "" unloaded */
	uint64_t dev_total, dev_free; /* device memory after the last job */
	Engine *eng;               /* the loaded engine: used by the worker only,
				    * set under mu (the loop tests it) */
	int confined;              /* from --models-dir: checked to be still
				    * inside it at every load */
	int unload_pending;        /* loop-only: an idle unload is queued */
	int n_active;              /* generates running now (under mu) */
	int batching;              /* the loaded engine batches (under mu):
				    * the worker tells queue positions */
	/* worker-only: the batch (see worker.c) */
	struct Batcher *batch;     /* batcher of eng, NULL: one at a time */
	struct Running **run;      /* [batch capacity] generates started */
	int n_run;                 /* entries in run */
	Request **wait;            /* generates taken off the queue, not
				    * started, in arrival order */
	int n_wait, cap_wait;      /* entries in wait, its capacity */
} Slot;

/* server.c: for a model from --models-dir, check that its path still
 * resolves to itself inside the directory, and (HF folder) that no file
 * in it links out. 0, or -1 with a message. */
int slot_confined(const Slot *m, char *err, size_t errlen);

/* worker.c */
int worker_start(Slot *m, char *err, size_t errlen);
/* Queue r on m (r->model = m); signals the worker. Caller holds no lock. */
void worker_push(Slot *m, Request *r);
/* Ask the worker to exit after cancelling what runs and dropping what
 * waits (their final events are still sent), and join it. */
void worker_stop(Slot *m);
/* Bytes charged to --mem-budget by models loaded or loading. */
uint64_t daemon_mem_used(struct Daemon *d);
/* Run by workers: hand a reply frame (malloc'd, with its 4-byte header) to
 * the loop; final marks the request's last frame. Implemented in server.c. */
void daemon_post(struct Daemon *d, Request *r, uint8_t *frame, size_t len,
		 int final);
/* Monotonic seconds. */
double mono_now(void);

#endif
