/* pycds: TRACE -- record the modules a program imports.
 *
 * Tracing collects entries in memory (plain C, so it still works late in
 * finalization) and merges them into the module list (cds_list.c) at exit:
 * under an exclusive lock on "<list>.lock", the current file is re-read,
 * new entries are appended in the order they were first imported, and the
 * result replaces the list durably.  Concurrent tracers therefore never
 * lose each other's entries.
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
#include <unistd.h>

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

static void
flush_trace(const char *path)
{
    size_t n = strlen(path) + 8;
    char *lockpath = PyMem_RawMalloc(n);
    if (lockpath == NULL) {
        return;
    }
    snprintf(lockpath, n, "%s.lock", path);
    int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lockfd < 0) {
        warn("cannot write module list '%s': %s", path, strerror(errno));
        PyMem_RawFree(lockpath);
        return;
    }
    while (flock(lockfd, LOCK_EX) != 0 && errno == EINTR) {
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
    PyMem_RawFree(lockpath);
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
