/*
 * daemon_util.h - start a real inferd (the built binary) on a temporary
 * socket and database for the integration tests, and talk raw frames to
 * it. Header-only: used by check_daemon.c and check_libinfer.c.
 */
#ifndef INFERD_DAEMON_UTIL_H
#define INFERD_DAEMON_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "protocol.h"
#include "testutil.h"

/* A daemon under test. */
typedef struct TDaemon {
	pid_t pid;          /* inferd's pid, 0 when not running */
	char dir[64];       /* temporary folder */
	char sock[128];     /* its socket */
	char db[128];       /* its database */
	char log[128];      /* its stderr */
	int listen_fd;      /* > 0: hand this socket over as systemd does */
} TDaemon;

/* Scale of every wait and upper time bound in the integration tests:
 * $INFERD_TEST_SLOW (tests/valgrind.sh sets 20: memcheck runs inferd
 * 20-50x slower), 1 when unset. Lower bounds (something must not happen
 * before T) are not scaled. */
static inline double t_slow(void)
{
	const char *s = getenv("INFERD_TEST_SLOW");
	double v = s ? atof(s) : 1;
	return v >= 1 ? v : 1;
}

static inline double t_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Fill a Unix address; -1 if path does not fit. */
static inline int t_sun(struct sockaddr_un *sa, const char *path)
{
	size_t n = strlen(path);
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (n >= sizeof sa->sun_path)
		return -1;
	memcpy(sa->sun_path, path, n + 1);
	return 0;
}

static inline int t_connect(const char *path)
{
	struct sockaddr_un sa;
	if (t_sun(&sa, path) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Exec inferd with the tiny models plus extra (NULL-terminated) args,
 * stderr to d->log. Does not wait. */
static inline pid_t t_spawn(TDaemon *d, const char *const *extra)
{
	const char *argv[64];
	int n = 0;
	static char m2[4200], m3[4200];
	snprintf(m2, sizeof m2, "l2=%s", test_data("models/tiny-llama2"));
	snprintf(m3, sizeof m3, "l3=%s", test_data("models/tiny-llama3"));
	argv[n++] = test_build("inferd");
	argv[n++] = "--no-config"; /* no ~/.config/inferd or /etc/inferd.conf */
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--db";
	argv[n++] = d->db;
	argv[n++] = "--model";
	argv[n++] = m2;
	argv[n++] = "--model";
	argv[n++] = m3;
	argv[n++] = "--threads";
	argv[n++] = "1";
	for (int i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		if (d->listen_fd > 0) {
			char pid[32];
			dup2(d->listen_fd, 3);
			snprintf(pid, sizeof pid, "%d", (int)getpid());
			setenv("LISTEN_PID", pid, 1);
			setenv("LISTEN_FDS", "1", 1);
		}
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	return pid;
}

/* Wait until path accepts connections (or pid died). */
static inline int t_wait_ready(const char *path, pid_t pid, double secs)
{
	double end = t_now() + secs * t_slow();
	while (t_now() < end) {
		int fd = t_connect(path);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(10000);
	}
	return -1;
}

/* Make the temporary folder and paths (t_start does it too). */
static inline int t_prepare(TDaemon *d)
{
	memset(d, 0, sizeof *d);
	snprintf(d->dir, sizeof d->dir, "/tmp/inferd-test-XXXXXX");
	if (!mkdtemp(d->dir))
		return -1;
	snprintf(d->sock, sizeof d->sock, "%s/s", d->dir);
	snprintf(d->db, sizeof d->db, "%s/inferd.db", d->dir);
	snprintf(d->log, sizeof d->log, "%s/log", d->dir);
	return 0;
}

/* Start after t_prepare (paths may have been adjusted). */
static inline int t_launch(TDaemon *d, const char *const *extra)
{
	d->pid = t_spawn(d, extra);
	if (d->pid < 0 || t_wait_ready(d->sock, d->pid, 20) < 0) {
		d->pid = 0;
		return -1;
	}
	return 0;
}

static inline int t_start(TDaemon *d, const char *const *extra)
{
	if (t_prepare(d) < 0)
		return -1;
	d->pid = t_spawn(d, extra);
	if (d->pid < 0 || t_wait_ready(d->sock, d->pid, 20) < 0) {
		d->pid = 0;
		return -1;
	}
	return 0;
}

/* SIGTERM and wait; returns the exit status (or -1). */
static inline int t_stop(TDaemon *d)
{
	int st = 0;
	if (!d->pid)
		return -1;
	kill(d->pid, SIGTERM);
	double end = t_now() + 60 * t_slow();
	while (waitpid(d->pid, &st, WNOHANG) == 0) {
		if (t_now() > end) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &st, 0);
			d->pid = 0;
			return -1;
		}
		usleep(10000);
	}
	d->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline void t_cleanup(TDaemon *d)
{
	char cmd[200];
	if (d->pid)
		t_stop(d);
	if (getenv("INFERD_TEST_KEEP")) { /* debugging: keep logs */
		fprintf(stderr, "kept %s\n", d->dir);
		return;
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d->dir);
}

static inline int t_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Send body as one frame (len prefix added). */
static inline int t_send(int fd, const void *body, size_t n)
{
	uint8_t h[4];
	proto_put_len(h, (uint32_t)n);
	if (t_write_all(fd, h, 4) < 0)
		return -1;
	return t_write_all(fd, body, n);
}

static inline int t_read_n(int fd, void *p, size_t n, double secs)
{
	char *c = p;
	double end = t_now() + secs * t_slow();
	while (n) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		int ms = (int)((end - t_now()) * 1000);
		if (ms <= 0 || poll(&pfd, 1, ms) <= 0)
			return -2; /* timeout */
		ssize_t r = recv(fd, c, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1; /* closed */
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* A received reply: its object lives in zone. */
typedef struct TReply {
	msgpack_zone zone;   /* owns obj */
	msgpack_object obj;  /* the map */
	uint8_t buf[1 << 16]; /* raw frame (small replies only) */
} TReply;

/* Read one frame into r. 0, -1 closed, -2 timeout. */
static inline int t_recv(int fd, TReply *r, double secs)
{
	uint8_t h[4];
	int rc = t_read_n(fd, h, 4, secs);
	if (rc < 0)
		return rc;
	uint32_t n = proto_get_len(h);
	if (n > sizeof r->buf)
		return -3;
	if ((rc = t_read_n(fd, r->buf, n, secs)) < 0)
		return rc;
	msgpack_zone_init(&r->zone, 2048);
	size_t off = 0;
	if (msgpack_unpack((const char *)r->buf, n, &off, &r->zone, &r->obj) !=
	    MSGPACK_UNPACK_SUCCESS)
		return -4;
	return 0;
}

/* Read frames until one whose type is not "loading" (the model is being
 * loaded first) or "queued". */
static inline int t_recv_event(int fd, TReply *r, double secs)
{
	for (;;) {
		int rc = t_recv(fd, r, secs);
		if (rc < 0)
			return rc;
		const msgpack_object *o = proto_field(&r->obj, "type");
		if (!o || o->type != MSGPACK_OBJECT_STR ||
		    !((o->via.str.size == 7 && !memcmp(o->via.str.ptr, "loading", 7)) ||
		      (o->via.str.size == 6 && !memcmp(o->via.str.ptr, "queued", 6))))
			return 0;
		msgpack_zone_destroy(&r->zone);
	}
}

/* Field of r as a C string in buf ("" if absent). */
static inline const char *t_str(const TReply *r, const char *key, char *buf,
				size_t cap)
{
	const msgpack_object *o = proto_field(&r->obj, key);
	size_t n = 0;
	if (o && (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN)) {
		n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
		memcpy(buf, o->via.str.ptr, n);
	}
	buf[n] = 0;
	return buf;
}

static inline long long t_int(const TReply *r, const char *key)
{
	const msgpack_object *o = proto_field(&r->obj, key);
	if (!o)
		return -999999;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return (long long)o->via.u64;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	return -999999;
}

/* Pack a request map from a tiny spec: pairs of key and value where the
 * value's type is given by a prefix: "s:" string, "i:" integer, "f:"
 * float, "b:" bool. */
static inline size_t t_pack(uint8_t *out, size_t cap, int npairs, ...)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (size_t)npairs);
	va_list ap;
	va_start(ap, npairs);
	for (int i = 0; i < npairs; i++) {
		const char *k = va_arg(ap, const char *);
		const char *v = va_arg(ap, const char *);
		msgpack_pack_str_with_body(&pk, k, strlen(k));
		if (v[0] == 's')
			msgpack_pack_str_with_body(&pk, v + 2, strlen(v + 2));
		else if (v[0] == 'i')
			msgpack_pack_int64(&pk, atoll(v + 2));
		else if (v[0] == 'f')
			msgpack_pack_double(&pk, atof(v + 2));
		else if (v[0] == 'b')
			(v[2] == 't' ? msgpack_pack_true : msgpack_pack_false)(&pk);
	}
	va_end(ap);
	size_t n = sb.size < cap ? sb.size : 0;
	memcpy(out, sb.data, n);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

/* golden.json prompts[0].greedy of a model (the tokens every generate of
 * "Once upon a time" must give greedily): count, or -1. */
static inline int golden_greedy(const char *model, int32_t *out, int cap)
{
	char path[256], err[256];
	snprintf(path, sizeof path, "models/%s/golden.json", model);
	json_doc *doc = json_parse_file(test_data(path), 0, err, sizeof err);
	if (!doc)
		return -1;
	const json_value *g =
		json_get(json_at(json_get(json_root(doc), "prompts"), 0), "greedy");
	int k = json_present(g) ? 0 : -1;
	for (size_t i = 0; k >= 0 && i < json_count(g) && k < cap; i++) {
		int64_t v;
		if (!json_int(json_at(g, i), 0, INT32_MAX, &v))
			break;
		out[k++] = (int32_t)v;
	}
	json_free(doc); /* g points into doc */
	return k;
}

#endif
