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

static void
warn(const char *fmt, const char *arg1, const char *arg2)
{
    fputs("cds: warning: ", stderr);
    fprintf(stderr, fmt, arg1, arg2);
    fputc('\n', stderr);
    fflush(stderr);
}

/* Open and lock "<path>.lock": the descriptor, or -1 after a warning. */
static int
lock_list(const char *path)
{
    size_t n = strlen(path) + 8;
    char *lockpath = PyMem_RawMalloc(n);
    if (lockpath == NULL) {
        return -1;
    }
    snprintf(lockpath, n, "%s.lock", path);
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

static void
flush_trace(const char *path)
{
    int lockfd = lock_list(path);
    if (lockfd < 0) {
        return;
    }

    /* Re-read under the lock: another tracer may have written meanwhile. */
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
        goto done;   /* nothing new: leave the file untouched */
    }
    if (_PyCDS_ListWrite(path, &merged) < 0) {
        warn("cannot write module list '%s': %s", path, strerror(errno));
        goto done;
    }
    _PyCDS_Log(1, "trace: %zd modules recorded, %zd new, in '%s'",
               merged.len, merged.len - before, path);
done:
    _PyCDS_ListClear(&merged);
    flock(lockfd, LOCK_UN);
    close(lockfd);
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
