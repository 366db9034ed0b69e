/*
 * fuzz_daemon.c - the daemon's request handling on arbitrary bytes: a real
 * inferd (daemon_run() on a thread of this process, the tiny Llama 2 model,
 * a 64-token context so any generate ends fast) gets each input as the byte
 * stream of one connection: length-prefixed frames, validated, unpacked and
 * dispatched (handle_request: every op's field parsing, generate included).
 * The harness then half-closes, reads replies until the daemon closes, and
 * checks that a fresh connection still gets its ping answered: a wedged or
 * dead daemon is a finding, as is any ASan/UBSan report.
 *
 * Inputs holding the bytes "shutdown" are skipped: we connect as the
 * daemon's own uid, to whom that op is allowed, and it would end the run.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "fuzzutil.h"

static DaemonConfig cfg;
static char sock_path[160], db_path[160], model_path[4096];

static void *daemon_main(void *arg)
{
	char err[256];
	if (daemon_run(&cfg, err, sizeof err) != 0) {
		fprintf(stderr, "fuzz_daemon: %s\n", err);
		_exit(1);
	}
	fprintf(stderr, "fuzz_daemon: the daemon stopped\n");
	abort(); /* only "shutdown" could stop it, and those inputs are skipped */
	return NULL;
}

static int dial(void)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read until EOF; -1 when the daemon is silent for secs. */
static int drain(int fd, double secs)
{
	static char buf[1 << 16];
	double end = now() + secs;
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		int ms = (int)((end - now()) * 1000);
		if (ms <= 0)
			return -1;
		/* libFuzzer's -timeout alarm interrupts poll(): not a timeout */
		int k = poll(&p, 1, ms);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		ssize_t r = recv(fd, buf, sizeof buf, 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return 0;
		if (r < 0 && errno != EINTR)
			return 0;
	}
}

static int send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1; /* the daemon may close first (frame too long) */
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	daemon_config_default(&cfg);
	snprintf(sock_path, sizeof sock_path, "%s/s", fuzz_dir());
	snprintf(db_path, sizeof db_path, "%s/inferd.db", fuzz_dir());
	snprintf(model_path, sizeof model_path, "%s",
		 fuzz_data("models/tiny-llama2"));
	cfg.socket_path = sock_path;
	cfg.db_path = db_path;
	cfg.models[0].name = "l2";
	cfg.models[0].path = model_path;
	cfg.n_models = 1;
	cfg.eng.threads = 1;
	cfg.eng.ctx = 64;
	cfg.eng.backend = "cpu";
	cfg.keep_alive = -1;
	cfg.max_tokens = 16;
	pthread_t th;
	if (pthread_create(&th, NULL, daemon_main, NULL) != 0)
		abort();
	for (int i = 0; i < 2000; i++) {
		int fd = dial();
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "fuzz_daemon: the daemon did not start\n");
	exit(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (memmem(data, size, "shutdown", 8))
		return 0;
	int fd = dial();
	if (fd < 0)
		abort();
	send_all(fd, data, size);
	shutdown(fd, SHUT_WR);
	if (drain(fd, 30) < 0) {
		fprintf(stderr, "fuzz_daemon: connection not closed in 30 s\n");
		abort();
	}
	close(fd);
	/* still serving: a ping on a fresh connection */
	static const uint8_t ping[] = { 0, 0, 0, 13, 0x82, 0xa2, 'o', 'p', 0xa4,
					'p', 'i', 'n', 'g', 0xa2, 'i', 'd', 0x07 };
	fd = dial();
	if (fd < 0 || send_all(fd, ping, sizeof ping) < 0)
		abort();
	uint8_t hdr[4];
	ssize_t got;
	while ((got = recv(fd, hdr, 4, MSG_WAITALL)) < 0 && errno == EINTR)
		;
	if (got != 4) {
		fprintf(stderr, "fuzz_daemon: ping not answered\n");
		abort();
	}
	close(fd);
	return 0;
}
