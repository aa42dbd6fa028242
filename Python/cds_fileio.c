/* pycds: writing files durably, and file names.
 *
 * Module lists (cds_list.c) and archives (cds_filemap.c) are replaced, never
 * rewritten in place: the new contents go to a temporary file in the same
 * directory, which is fsync()ed and renamed over the old file, and the
 * directory is fsync()ed.  A reader sees the old file or the new one, never
 * a partial one, and a process that has the old archive mapped keeps a
 * valid mapping.
 *
 * Errors: -1 with errno set, no Python exception (these run at exit and in
 * DUMP, where the caller prints the message); _PyCDS_EncodePath() clears
 * the exception it may raise.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* write() all of 'data', retrying on EINTR and short writes */
int
_PyCDS_WriteAll(int fd, const void *data, size_t len)
{
    const char *buf = data;
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Encode a str path in the file system encoding; on failure, clear the
   error and return -1 (callers then take the normal path). */
int
_PyCDS_EncodePath(PyObject *path, PyObject **bytes, const char **cpath)
{
    *bytes = PyUnicode_EncodeFSDefault(path);
    if (*bytes == NULL) {
        PyErr_Clear();
        return -1;
    }
    *cpath = PyBytes_AS_STRING(*bytes);
    return 0;
}

int
_PyCDS_TempFileOpen(_PyCDS_TempFile *t, const char *path)
{
    t->fd = -1;
    t->path = path;
    size_t n = strlen(path) + 32;
    t->tmp = PyMem_RawMalloc(n);
    if (t->tmp == NULL) {
        errno = ENOMEM;
        return -1;
    }
    snprintf(t->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    t->fd = open(t->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (t->fd < 0) {
        int saved = errno;
        PyMem_RawFree(t->tmp);
        t->tmp = NULL;
        errno = saved;
        return -1;
    }
    return 0;
}

/* fsync() the directory holding 'path', so that a rename is durable. */
static void
sync_directory(const char *path)
{
    char *dir = PyMem_RawMalloc(strlen(path) + 2);
    if (dir == NULL) {
        return;
    }
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *(slash == dir ? slash + 1 : slash) = '\0';
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    PyMem_RawFree(dir);
}

int
_PyCDS_TempFileCommit(_PyCDS_TempFile *t)
{
    if (fsync(t->fd) < 0) {
        _PyCDS_TempFileAbort(t);
        return -1;
    }
    int err = close(t->fd);
    t->fd = -1;
    if (err < 0 || rename(t->tmp, t->path) < 0) {
        _PyCDS_TempFileAbort(t);
        return -1;
    }
    sync_directory(t->path);
    PyMem_RawFree(t->tmp);
    t->tmp = NULL;
    return 0;
}

void
_PyCDS_TempFileAbort(_PyCDS_TempFile *t)
{
    int saved = errno;
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    if (t->tmp != NULL) {
        unlink(t->tmp);
        PyMem_RawFree(t->tmp);
        t->tmp = NULL;
    }
    errno = saved;
}
