/*
 * backend.c - backend_open(): pick the CPU backend or load the CUDA one.
 *
 * The CUDA backend is a separate shared object so that the engine, the
 * daemon and the tests never link against the CUDA runtime: a machine
 * without a GPU or driver runs the same binaries on the CPU. Lookup order:
 * $INFERD_CUDA_LIB (when set, the only candidate, so a wrong path is
 * reported rather than silently replaced), the folder of the running
 * executable (/proc/self/exe, a build tree), <exe>/../lib/inferd (an
 * installed tree, wherever it was moved), INFERD_PKGLIBDIR (the folder
 * make install puts it in, fixed at build time), then dlopen's own
 * search path.
 */
#include "backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CUDA_LIB_NAME "libinferd-cuda.so"
#ifndef INFERD_PKGLIBDIR
#define INFERD_PKGLIBDIR "/usr/local/lib/inferd" /* make install's $(PKGLIBDIR) */
#endif

/* snprintf that may truncate: paths and dlerror() texts are unbounded. */
static void msg(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* dlopen path, or NULL with the reason in why. */
static void *load_cuda_lib(char *why, size_t whylen)
{
	const char *env = getenv("INFERD_CUDA_LIB");
	if (env && *env) {
		void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			const char *e = dlerror();
			msg(why, whylen, "cannot load $INFERD_CUDA_LIB: %s",
				 e ? e : env);
		}
		return h;
	}
	char dirs[3][PATH_MAX];
	int nd = 0;
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len > 0) {
		exe[len] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			snprintf(dirs[nd++], PATH_MAX, "%s", exe);
			if ((size_t)snprintf(dirs[nd], PATH_MAX, "%s/../lib/inferd",
					     exe) < PATH_MAX)
				nd++;
		}
	}
	snprintf(dirs[nd++], PATH_MAX, "%s", INFERD_PKGLIBDIR);
	for (int i = 0; i < nd; i++) {
		char path[PATH_MAX];
		int pn = snprintf(path, sizeof path, "%s/%s", dirs[i], CUDA_LIB_NAME);
		if (pn < 0 || (size_t)pn >= sizeof path || access(path, F_OK) != 0)
			continue;
		void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (h)
			return h;
		/* Present but unloadable (missing libcudart, ...): that
		 * reason is the useful one. */
		const char *e = dlerror();
		msg(why, whylen, "cannot load %s", e ? e : path);
		return NULL;
	}
	void *h = dlopen(CUDA_LIB_NAME, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		msg(why, whylen,
			 "%s not found beside the executable, in " INFERD_PKGLIBDIR
			 " or on the library path (set INFERD_CUDA_LIB)",
			 CUDA_LIB_NAME);
	return h;
}

static Backend *open_cuda(int device, char *why, size_t whylen)
{
	void *h = load_cuda_lib(why, whylen);
	if (!h)
		return NULL;
	cuda_backend_create_fn create;
	void *sym = dlsym(h, CUDA_BACKEND_SYMBOL);
	/* POSIX: converting object to function pointer via memcpy. */
	memcpy(&create, &sym, sizeof create);
	if (!create) {
		msg(why, whylen, "%s does not export %s", CUDA_LIB_NAME,
			 CUDA_BACKEND_SYMBOL);
		dlclose(h);
		return NULL;
	}
	char err[512] = "";
	Backend *b = create(BACKEND_ABI_VERSION, device, err, sizeof err);
	if (!b) {
		msg(why, whylen, "%s", err[0] ? err : "CUDA backend failed");
		dlclose(h);
		return NULL;
	}
	if (!b->ops || !b->ops->destroy || !b->ops->matmul) {
		msg(why, whylen, "%s returned an incomplete backend",
			 CUDA_LIB_NAME);
		/* Cannot destroy safely without ops; leak it and the lib. */
		return NULL;
	}
	/* The handle stays open for the life of the process: the backend's
	 * code lives in it and destroy() is one of its functions. */
	return b;
}

int backend_sync(Backend *b, int *fatal, char *err, size_t errlen)
{
	char m[256];
	*fatal = 0;
	if (b->ops->sync(b, fatal, m, sizeof m) == 0)
		return 0;
	snprintf(err, errlen, "%s backend%s: %s", b->ops->name,
		 *fatal ? " (fatal)" : "", m);
	return -1;
}

Backend *backend_open(const BackendOptions *opt, char *err, size_t errlen)
{
	const char *name = opt && opt->name ? opt->name : "auto";
	int threads = opt ? opt->threads : 0;
	int device = opt ? opt->device : 0;
	if (!strcmp(name, "cpu"))
		return cpu_backend_create(threads, err, errlen);
	if (strcmp(name, "cuda") && strcmp(name, "auto")) {
		msg(err, errlen,
			 "unknown backend '%s' (want auto, cpu or cuda)", name);
		return NULL;
	}
	if (device < 0) {
		msg(err, errlen, "bad CUDA device index %d", device);
		return NULL;
	}
	char why[768] = "";
	Backend *b = open_cuda(device, why, sizeof why);
	if (b)
		return b;
	if (!strcmp(name, "cuda")) {
		msg(err, errlen, "CUDA backend unavailable: %s", why);
		return NULL;
	}
	if (!(opt && opt->quiet))
		/* named after the running program: infer-run and inferd
		 * both come through here */
		fprintf(stderr,
			"%s: CUDA backend unavailable (%s); using the CPU\n",
			program_invocation_short_name, why);
	return cpu_backend_create(threads, err, errlen);
}
