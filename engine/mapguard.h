/*
 * mapguard.h - survive a model file that shrinks or changes under its
 * read-only mapping.
 *
 * Weights are mmapped from the model files and read in place (CPU backend)
 * or copied at load (CUDA). When a loaded file is truncated, the kernel
 * drops the pages past the new end from every mapping of it, MAP_PRIVATE
 * included, and the next read of one raises SIGBUS, which would kill the
 * whole daemon. So every mapping is registered here, and a process-wide
 * SIGBUS handler, for a fault inside a registered mapping, maps anonymous
 * zero pages over the rest of that mapping (from the faulting page to its
 * end: all of it lies past the file's new end), counts the fault and
 * returns: the faulting load re-runs and reads zeros, in whichever thread
 * it was (the CPU backend's pool threads too). The forward pass finishes
 * with garbage and the model code, checking mapguard_faulted() after each
 * pass, fails it instead of sampling from it. A SIGBUS anywhere else, or
 * sent by kill, gets the previous disposition (the default: core dump).
 *
 * A file changed in place (written, not truncated) raises nothing: a
 * MAP_PRIVATE mapping shares the page cache until it is written, so the
 * new bytes show through wherever a page is read next, mixing old and
 * new weights. That cannot be caught while it happens; mapguard_changed()
 * compares the file's identity, size and mtime with those at mapping time
 * so the owner reopens a changed file before its next use. A file replaced
 * by rename keeps the old inode mapped: consistent, and also reported as
 * changed.
 *
 * Registered mappings live in a fixed table (MAPGUARD_MAX); a mapping that
 * does not fit is not guarded (a truncation then kills the process, as
 * without this module).
 */
#ifndef INFERD_MAPGUARD_H
#define INFERD_MAPGUARD_H

#include <stddef.h>
#include <sys/stat.h>

#define MAPGUARD_MAX 512 /* mappings guarded at once */

/* Guard the read-only mapping [addr, addr+len) of path; st is the fstat of
 * the file it maps; owner groups the mappings of one loaded file set (the
 * shards of a model). Installs the SIGBUS handler on first use. Returns
 * 0, or -1 when the table is full (the mapping is then unguarded). */
int mapguard_add(const void *addr, size_t len, const char *path,
		 const struct stat *st, const void *owner);
/* Stop guarding the mapping at addr (before munmap). */
void mapguard_remove(const void *addr);
/* 1 when a read of any mapping of owner faulted (its file shrank or could
 * not be read); why names the file. Safe to call often: no syscall. */
int mapguard_faulted(const void *owner, char *why, size_t whylen);
/* 1 when a file of owner is no longer the one mapped: removed, replaced
 * (other inode), resized or modified (mtime) since; why says which. */
int mapguard_changed(const void *owner, char *why, size_t whylen);

#endif
