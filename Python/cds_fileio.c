/* pycds: opening and writing files safely, and file names.
 *
 * Module lists (cds_list.c) and archives (cds_filemap.c) are replaced, never
 * rewritten in place: the new contents go to a temporary file in the same
 * directory, which is fsync()ed and renamed over the old file, and the
 * directory is fsync()ed.  A reader sees the old file or the new one, never
 * a partial one, and a process that has the old archive mapped keeps a
 * valid mapping.
 *
 * The directory may be writable by others, so the temporary file must not
 * be one they can name in advance: it is made unnamed (O_TMPFILE) and
 * linked under a random name only when complete, or, where the file system
 * cannot, created under a random name with O_EXCL (which never follows a
 * link).  A killed writer leaves nothing behind in the first case; in the
 * second, the next writer of the same file removes what it left (its pid
 * is in the name).  Files
 * are read only after fstat() shows a regular file, opened with O_NONBLOCK
 * so that a FIFO or device in their place cannot block the process.
 *
 * Errors: -1 with errno set, no Python exception (these run at exit and in
 * DUMP, where the caller prints the message); _PyCDS_EncodePath() clears
 * the exception it may raise.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_pylifecycle.h"   // _PyOS_URandomNonblock()
#include "cds_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>               // kill()
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A leftover temporary file must be this old (seconds) to be removed:
   its writer may run in another pid namespace. */
#define LEFTOVER_AGE 60

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

/* Open 'path' read-only if it is a regular file: the descriptor, or -1
   with errno set (ENOENT and the like from open(), EINVAL when it is not a
   regular file).  Never blocks on a FIFO or device. */
int
_PyCDS_OpenRegular(const char *path, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

/* "PATH.tmp.<pid>.<random>" in 'buf' */
static void
temp_name(char *buf, size_t size, const char *path)
{
    uint32_t r = 0;
    if (_PyOS_URandomNonblock(&r, sizeof(r)) < 0) {
        PyErr_Clear();
        r = (uint32_t)clock() ^ ((uint32_t)(uintptr_t)&r >> 4);
    }
    snprintf(buf, size, "%s.tmp.%ld.%08x", path, (long)getpid(), r);
}

/* The directory part of 'path' ("." if none), in a new raw buffer. */
char *
_PyCDS_DirectoryOf(const char *path)
{
    char *dir = PyMem_RawMalloc(strlen(path) + 2);
    if (dir == NULL) {
        return NULL;
    }
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
    }
    else {
        *(slash == dir ? slash + 1 : slash) = '\0';
    }
    return dir;
}

static int create_named(_PyCDS_TempFile *t);

int
_PyCDS_TempFileOpen(_PyCDS_TempFile *t, const char *path)
{
    t->fd = -1;
    t->path = path;
    t->named = 0;
    t->tmp = PyMem_RawMalloc(strlen(path) + 40);
    if (t->tmp == NULL) {
        errno = ENOMEM;
        return -1;
    }
#ifdef O_TMPFILE
    char *dir = _PyCDS_DirectoryOf(path);
    if (dir != NULL) {
        t->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
        PyMem_RawFree(dir);
        if (t->fd >= 0) {
            return 0;
        }
    }
#endif
    /* no O_TMPFILE here: a fresh name that nobody could prepare */
    t->fd = create_named(t);
    if (t->fd >= 0) {
        t->named = 1;
        return 0;
    }
    int saved = errno;
    PyMem_RawFree(t->tmp);
    t->tmp = NULL;
    errno = saved;
    return -1;
}

/* fsync() the directory holding 'path', so that a rename is durable. */
static void
sync_directory(const char *path)
{
    char *dir = _PyCDS_DirectoryOf(path);
    if (dir == NULL) {
        return;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    PyMem_RawFree(dir);
}

/* Create a file under a fresh random name beside the target. */
static int
create_named(_PyCDS_TempFile *t)
{
    for (int tries = 0; tries < 100; tries++) {
        temp_name(t->tmp, strlen(t->path) + 40, t->path);
        int fd = open(t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
                              | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) {
            return fd;
        }
    }
    return -1;
}

/* Without /proc, the unnamed file cannot be linked: copy it to a named
   one. */
static int
copy_unnamed(_PyCDS_TempFile *t)
{
    int out = create_named(t);
    if (out < 0) {
        return -1;
    }
    char buf[65536];
    off_t off = 0;
    ssize_t n;
    while ((n = pread(t->fd, buf, sizeof(buf), off)) > 0) {
        if (_PyCDS_WriteAll(out, buf, (size_t)n) < 0) {
            break;
        }
        off += n;
    }
    if (n != 0 || fsync(out) < 0) {
        int saved = errno;
        close(out);
        unlink(t->tmp);
        errno = saved;
        return -1;
    }
    close(t->fd);
    t->fd = out;
    t->named = 1;
    return 0;
}

/* Give the unnamed temporary file a fresh random name beside the target
   (linkat() never replaces an existing name). */
static int
link_unnamed(_PyCDS_TempFile *t)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t->fd);
    for (int tries = 0; tries < 100; tries++) {
        temp_name(t->tmp, strlen(t->path) + 40, t->path);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, t->tmp, AT_SYMLINK_FOLLOW) == 0) {
            t->named = 1;
            return 0;
        }
        if (errno != EEXIST) {
            return copy_unnamed(t);
        }
    }
    return -1;
}

/* Whether 'name' is "BASE.tmp.<pid>.<8 hex digits>" of a writer that is
   gone; its pid in *pid. */
static int
leftover_name(const char *name, const char *base, long *pid)
{
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) {
        return 0;
    }
    const char *p = name + n + 5;
    char *end;
    errno = 0;
    *pid = strtol(p, &end, 10);
    if (end == p || *p == '-' || *p == '+' || errno || *pid <= 0
        || *end != '.' || strlen(end + 1) != 8
        || strspn(end + 1, "0123456789abcdef") != 8)
    {
        return 0;
    }
    return *pid != (long)getpid() && kill((pid_t)*pid, 0) < 0
           && errno == ESRCH;
}

/* Remove the temporary files that killed writers of 'path' left: ours
   (never following a link), old, and of a process that is gone. */
static void
remove_leftovers(const char *path)
{
    char *dir = _PyCDS_DirectoryOf(path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    PyMem_RawFree(dir);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        if (dfd >= 0) {
            close(dfd);
        }
        return;
    }
    time_t now = time(NULL);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        struct stat st;
        long pid;
        if (leftover_name(ent->d_name, base, &pid)
            && fstatat(dfd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISREG(st.st_mode) && st.st_uid == geteuid()
            && now - st.st_mtime > LEFTOVER_AGE)
        {
            (void)unlinkat(dfd, ent->d_name, 0);
        }
    }
    closedir(d);
}

int
_PyCDS_TempFileCommit(_PyCDS_TempFile *t)
{
    if (fsync(t->fd) < 0 || (!t->named && link_unnamed(t) < 0)) {
        _PyCDS_TempFileAbort(t);
        return -1;
    }
    int err = close(t->fd);
    t->fd = -1;
    if (err < 0 || rename(t->tmp, t->path) < 0) {
        _PyCDS_TempFileAbort(t);
        return -1;
    }
    t->named = 0;
    remove_leftovers(t->path);
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
    if (t->named) {
        unlink(t->tmp);
        t->named = 0;
    }
    PyMem_RawFree(t->tmp);
    t->tmp = NULL;
    errno = saved;
}
