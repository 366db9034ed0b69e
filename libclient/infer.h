/*
 * infer.h - libinfer, the C client library of inferd.
 *
 * One infer_client is one connection to the daemon's Unix socket. Every
 * operation has a blocking call; generate also has a non-blocking form for
 * programs with their own event loop: poll infer_fd() (POLLIN, plus
 * POLLOUT while infer_want_write() says so) and call infer_process() when
 * it is ready; callbacks run from inside infer_process() (or inside the
 * blocking calls, which drive the same machinery).
 *
 * Errors: functions returning int give 0 (or a count) on success and a
 * negative INFER_E* code on failure; infer_strerror() names the code and
 * infer_errmsg() gives the daemon's (or the system's) message for the
 * last failure on that client.
 *
 * Ownership: strings and structs passed in are only borrowed for the
 * duration of the call. Anything returned through a char ** or int32_t **
 * is malloc'd and belongs to the caller (free() it). Strings given to
 * callbacks are valid only during the callback.
 *
 * Thread safety: an infer_client must be used by one thread at a time.
 * Different clients are independent. infer_strerror(), infer_version() and
 * infer_default_socket() are thread-safe.
 */
#ifndef INFER_H
#define INFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INFER_VERSION_MAJOR 0 /* incompatible API changes */
#define INFER_VERSION_MINOR 1 /* additions */
#define INFER_VERSION_PATCH 0 /* fixes */
#define INFER_VERSION_NUM \
	(INFER_VERSION_MAJOR * 10000 + INFER_VERSION_MINOR * 100 + \
	 INFER_VERSION_PATCH)

#if defined(__GNUC__)
#define INFER_API __attribute__((visibility("default")))
#else
#define INFER_API
#endif

/* The error table: name, value, text. */
#define INFER_ERRORS(X)                                                 \
	X(INFER_EINVAL, -1, "invalid argument")                         \
	X(INFER_ENOMEM, -2, "out of memory")                            \
	X(INFER_ECONNECT, -3, "cannot connect to inferd")               \
	X(INFER_EIO, -4, "connection error")                            \
	X(INFER_ECLOSED, -5, "connection closed by inferd")             \
	X(INFER_EPROTO, -6, "protocol error")                           \
	X(INFER_EVERSION, -7, "protocol version mismatch")              \
	X(INFER_EREQUEST, -8, "request rejected by inferd")             \
	X(INFER_ENOTFOUND, -9, "no such model or request")              \
	X(INFER_EBUSY, -10, "inferd is busy")                           \
	X(INFER_ELIMIT, -11, "request over a limit")                    \
	X(INFER_EDENIED, -12, "permission denied")                      \
	X(INFER_EMEMORY, -13, "model does not fit the memory budget")   \
	X(INFER_ELOAD, -14, "model failed to load")                     \
	X(INFER_EENGINE, -15, "generation failed")                      \
	X(INFER_ESHUTDOWN, -16, "inferd is shutting down")              \
	X(INFER_EAGAIN, -17, "would block")                             \
	X(INFER_ETOOMANY, -18, "too many requests in flight")

enum {
#define INFER_X_ENUM(name, value, text) name = value,
	INFER_ERRORS(INFER_X_ENUM)
#undef INFER_X_ENUM
};

typedef struct infer_client infer_client;

/* "0.1.0"; the library's, which may differ from the header's macros. */
INFER_API const char *infer_version(void);
/* Text of an INFER_E* code (static string). */
INFER_API const char *infer_strerror(int code);
/* free() for what libinfer returned through char ** / int32_t **: for
 * bindings (Python ctypes, ...) that cannot be sure their free() is the
 * one libinfer's malloc() pairs with. Since 0.1. */
INFER_API void infer_free(void *p);
/* Default socket path ($XDG_RUNTIME_DIR/inferd.sock, else
 * /tmp/inferd-<uid>/inferd.sock), as the daemon resolves it. */
INFER_API int infer_default_socket(char *out, size_t cap);

/* Connect to path (NULL = default) and exchange hello. On success *out is
 * a client the caller closes with infer_close(). On failure *out is NULL;
 * errmsg (if not NULL) receives a message naming the path tried. */
INFER_API int infer_connect(infer_client **out, const char *path,
			    char *errmsg, size_t errlen);
/* Close the connection and free c. Requests still in flight are dropped
 * (the daemon cancels them) and their on_done callbacks do not run. */
INFER_API void infer_close(infer_client *c);
/* Message of the last failure on c (owned by c, valid until the next
 * call on c). */
INFER_API const char *infer_errmsg(const infer_client *c);
/* Protocol version and daemon version the daemon sent in its hello. */
INFER_API int infer_daemon_protocol(const infer_client *c);

/* ---- simple operations (blocking) ---- */
INFER_API int infer_ping(infer_client *c);
/* JSON text of the reply (status / models / log); caller frees *json. */
INFER_API int infer_status(infer_client *c, char **json);
INFER_API int infer_models(infer_client *c, char **json);
/* limit 0 = daemon default; all != 0 asks for every user's rows (admin). */
INFER_API int infer_log(infer_client *c, int limit, int all, char **json);
/* The daemon's metrics in the Prometheus text exposition format (0.0.4):
 * request and token counters per model, operation and uid, histograms of
 * time to first token and decode tokens/s, queue depths and memory.
 * *text malloc'd, NUL-terminated (caller frees). Since 0.1. */
INFER_API int infer_metrics(infer_client *c, char **text);
/* keep_alive: seconds after last use (-1 never unload, INFER_KEEP_DEFAULT
 * for the daemon's default). */
#define INFER_KEEP_DEFAULT (-1000)
INFER_API int infer_load(infer_client *c, const char *model, int keep_alive);
INFER_API int infer_unload(infer_client *c, const char *model);
/* Returns the token count; *ids malloc'd (caller frees). */
INFER_API int infer_tokenize(infer_client *c, const char *model,
			     const char *text, int add_bos, int special,
			     int32_t **ids);
/* *text malloc'd and NUL-terminated (caller frees). */
INFER_API int infer_detokenize(infer_client *c, const char *model,
			       const int32_t *ids, size_t n, char **text);
INFER_API int infer_shutdown(infer_client *c);

/* ---- generate ---- */
typedef struct infer_message {
	const char *role;    /* "system", "user", "assistant" */
	const char *content; /* UTF-8 text */
} infer_message;

typedef struct infer_gen_params {
	const char *model;             /* model name (required) */
	const char *prompt;            /* raw prompt, or NULL with messages */
	const infer_message *messages; /* chat messages (template applied) */
	size_t n_messages;             /* how many */
	const char *system;            /* system prompt for chat, or NULL */
	const char *chat_template;     /* family ("chatml", ...), a NAME.jinja
					* file in the daemon's --models-dir,
					* or NULL */
	int max_tokens;                /* <= 0: daemon default */
	/* Sampling; negative (or NaN for floats) = daemon default. */
	float temperature;             /* 0 = greedy */
	int top_k;                     /* 0 = off */
	float top_p;                   /* 1 = off */
	float min_p;                   /* 0 = off */
	float repeat_penalty;          /* 1 = off */
	float freq_penalty;            /* 0 = off (NaN: default) */
	float presence_penalty;        /* 0 = off (NaN: default) */
	int penalty_last_n;            /* penalty window (< 0: default) */
	int64_t seed;                  /* < 0: daemon default */
	const char *const *stop;       /* stop strings */
	size_t n_stop;                 /* how many (<= 8) */
	int ignore_eos;                /* keep going past end-of-generation */
	int keep_alive;                /* INFER_KEEP_DEFAULT or seconds */
	int priority;                  /* -10..10, 0 default: higher starts
					* first; above 0 only for the daemon's
					* uid and root (others get 0) */
} infer_gen_params;

/* Fill p with "daemon default" for every field. */
INFER_API void infer_gen_params_init(infer_gen_params *p);

typedef struct infer_gen_result {
	char finish[16];    /* "length", "eos", "stop", "cancel", ... */
	int prompt_tokens;  /* tokens in the prompt */
	int gen_tokens;     /* tokens generated */
	double ttft_ms;     /* request arrival to first token */
	double total_ms;    /* request arrival to done */
	double tok_s;       /* generated tokens per second of decoding */
} infer_gen_result;

/* A piece of generated text (whole UTF-8 characters) and the token that
 * completed it. Return nonzero to cancel the request. */
typedef int (*infer_token_fn)(void *ud, int32_t token, const char *text,
			      size_t len);
/* The end of an asynchronous generate: status 0 with *res filled, or a
 * negative code (message in infer_errmsg()). */
typedef void (*infer_done_fn)(void *ud, int status,
			      const infer_gen_result *res);
/* "queued behind position requests" (optional); position -1 means the
 * model is being loaded before the request runs. */
typedef void (*infer_queued_fn)(void *ud, int position);

/* Blocking: streams tokens to on_token, returns 0 and fills *res. */
INFER_API int infer_generate(infer_client *c, const infer_gen_params *p,
			     infer_token_fn on_token, void *ud,
			     infer_gen_result *res);

/* Non-blocking: queue the request and return its id (> 0) in *req_id;
 * on_token / on_done run from infer_process(). */
INFER_API int infer_generate_async(infer_client *c, const infer_gen_params *p,
				   infer_token_fn on_token,
				   infer_done_fn on_done, void *ud,
				   uint32_t *req_id);
/* Ask the daemon to stop request req_id (async; its on_done still runs). */
INFER_API int infer_cancel(infer_client *c, uint32_t req_id);
/* Optional callback for "queued" events of the next async generates. */
INFER_API void infer_on_queued(infer_client *c, infer_queued_fn fn);

/* ---- event-loop integration ---- */
/* The socket (non-blocking) to poll; owned by c. */
INFER_API int infer_fd(const infer_client *c);
/* 1 while buffered output waits for the socket to be writable. */
INFER_API int infer_want_write(const infer_client *c);
/* Read what is available, write what is pending, run callbacks. Never
 * blocks. Returns the number of requests that ended, or a negative code
 * (the connection is then unusable). */
INFER_API int infer_process(infer_client *c);
/* Requests still in flight on c. */
INFER_API int infer_pending(const infer_client *c);

#ifdef __cplusplus
}
#endif

#endif
