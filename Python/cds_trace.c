/* pycds: TRACE -- record the modules a program imports.
 *
 * Tracing collects entries in memory (plain C, so it still works late in
 * finalization) and merges them into the module list (cds_list.c) at exit:
 * under an exclusive lock on "<list>.lock", the current file is re-read,
 * new entries are appended in the order they were first imported, and the
 * result replaces the list durably.  Concurrent tracers therefore never
 * lose each other's entries.
 *
 * The lock file may sit in a directory others can write: it is opened
 * without following a link, must be a regular file of this user, is
 * readable by no one else (so no one else can hold its lock), and a lock
 * held too long (LOCK_WAIT_MS) gives up the update with a warning rather
 * than hang the process at exit.
 *
 * Errors: none reach the program; a list that cannot be written is a
 * warning on stderr.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>             // flock()
#include <sys/stat.h>
#include <time.h>                 // nanosleep()
#include <unistd.h>

#define LOCK_WAIT_MS 5000

/* --- tracing ------------------------------------------------------------ */

static _PyCDS_List traced = {NULL, 0, 0};

void
_PyCDS_TraceModule(const char *kind, PyObject *name, PyObject *path)
{
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (path != NULL) {
        if (_PyCDS_EncodePath(path, &bpath, &cpath) < 0) {
            return;
        }
        /* Only absolute paths without tabs or newlines can be listed */
        if (cpath[0] != '/' || strpbrk(cpath, "\t\n\r") != NULL) {
            Py_DECREF(bpath);
            return;
        }
    }
    if (_PyCDS_ValidModuleName(cname) && _PyCDS_ListAdd(&traced, cname, kind, cpath) > 0) {
        _PyCDS_Log(2, "trace: %s (%s)", cname, kind);
    }
    Py_XDECREF(bpath);
}

/* An entry of another kind than a module's (cds_regex.c): 'field' is
   what follows the kind, already valid for a list. */
void
_PyCDS_TraceEntry(const char *name, const char *kind, const char *field)
{
    if (_PyCDS_ListAdd(&traced, name, kind, field) > 0) {
        _PyCDS_Log(2, "trace: %s (%s)", name, kind);
    }
}

/* AUTO (cds_auto.c) keeps the list quietly: its problems are for
   -X cds_verbose only. */
static int quiet;

static void
warn(const char *fmt, const char *arg1, const char *arg2)
{
    if (quiet) {
        if (_PyCDS_GetSettings()->verbose >= 1) {
            fputs("cds: auto: ", stderr);
            fprintf(stderr, fmt, arg1, arg2);
            fputc('\n', stderr);
            fflush(stderr);
        }
        return;
    }
    fputs("cds: warning: ", stderr);
    fprintf(stderr, fmt, arg1, arg2);
    fputc('\n', stderr);
    fflush(stderr);
}

/* Open and lock "<path>.lock": the descriptor, or -1 after a warning.
   With 'wait' 0, a lock another process holds is not waited for (-1,
   and *busy set, without a warning). */
static int
lock_list(const char *path, int wait, int *busy)
{
    char *lockpath = _PyCDS_Concat(path, ".lock", "");
    if (lockpath == NULL) {
        return -1;
    }
    int fd = open(lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK
                            | O_CLOEXEC, 0600);
    struct stat st;
    const char *problem = NULL;
    if (fd < 0 && errno != ELOOP) {
        warn("cannot write module list '%s': %s", path, strerror(errno));
        PyMem_RawFree(lockpath);
        return -1;
    }
    if (fd < 0) {
        problem = "it is a symbolic link";
    }
    else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        problem = "not a regular file";
    }
    else if (st.st_uid != geteuid()) {
        problem = "owned by another user";
    }
    else if ((st.st_mode & 077) != 0 && fchmod(fd, 0600) < 0) {
        problem = "others may use it and its mode cannot be changed";
    }
    if (problem != NULL) {
        warn("module list '%s' not updated: its lock file: %s", path, problem);
        if (fd >= 0) {
            close(fd);
        }
        PyMem_RawFree(lockpath);
        return -1;
    }
    PyMem_RawFree(lockpath);
    /* bounded wait: a process exiting must not hang on another's lock */
    struct timespec pause = {0, 10 * 1000000};
    for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; waited += 10) {
        if (!wait && errno == EWOULDBLOCK) {
            *busy = 1;
            close(fd);
            return -1;
        }
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= LOCK_WAIT_MS) {
            warn("module list '%s' not updated: %s", path,
                 errno == EWOULDBLOCK ? "another process holds its lock"
                                      : strerror(errno));
            close(fd);
            return -1;
        }
        nanosleep(&pause, NULL);
    }
    return fd;
}

/* Merge the traced entries into the list at 'path' (its lock held);
   the number of entries added, or -1 after a warning. */
static Py_ssize_t
merge_trace(const char *path)
{
    /* Re-read under the lock: another tracer may have written meanwhile. */
    Py_ssize_t added = -1;
    _PyCDS_List merged = {NULL, 0, 0};
    char errbuf[512];
    if (_PyCDS_ListRead(path, &merged, errbuf, sizeof(errbuf)) < 0) {
        warn("%s; not overwritten%s", errbuf, "");
        goto done;
    }
    Py_ssize_t before = merged.len;
    for (Py_ssize_t i = 0; i < traced.len; i++) {
        const _PyCDS_ListEntry *e = &traced.items[i];
        if (_PyCDS_ListAdd(&merged, e->name, e->kind, e->path) < 0) {
            goto done;
        }
    }
    if (merged.len == before && before > 0) {
        added = 0;   /* nothing new: leave the file untouched */
        goto done;
    }
    if (_PyCDS_ListWrite(path, &merged) < 0) {
        warn("cannot write module list '%s': %s", path, strerror(errno));
        goto done;
    }
    added = merged.len - before;
    _PyCDS_Log(1, "%s: %zd modules recorded, %zd new, in '%s'",
               quiet ? "auto" : "trace", merged.len, added, path);
done:
    _PyCDS_ListClear(&merged);
    return added;
}

static void
unlock_list(int lockfd)
{
    flock(lockfd, LOCK_UN);
    close(lockfd);
}

static void
flush_trace(const char *path)
{
    int busy = 0;
    int lockfd = lock_list(path, 1, &busy);
    if (lockfd >= 0) {
        (void)merge_trace(path);
        unlock_list(lockfd);
    }
}

/* AUTO: lock the list without waiting (-1: *busy set if another process
   holds the lock, otherwise logged) and merge what this process imported
   into it (*added: how many entries were new, -1 if it could not be
   written).  The caller unlocks with _PyCDS_TraceUnlock(). */
int
_PyCDS_TraceMergeLocked(const char *list_path, int *busy, Py_ssize_t *added)
{
    quiet = 1;
    *busy = 0;
    int lockfd = lock_list(list_path, 0, busy);
    if (lockfd >= 0) {
        *added = merge_trace(list_path);
    }
    _PyCDS_ListClear(&traced);
    return lockfd;
}

void
_PyCDS_TraceUnlock(int lockfd)
{
    unlock_list(lockfd);
}

void
_PyCDS_TraceClear(void)
{
    _PyCDS_ListClear(&traced);
}

/* At exit: merge what this process imported into the list. */
void
_PyCDS_TraceFini(const char *list_path)
{
    if (list_path != NULL) {
        flush_trace(list_path);
    }
    _PyCDS_ListClear(&traced);
}
