/* pycds: TRACE mode and the module list file.
 *
 * A module list is UTF-8 text, one module per line:
 *
 *     # pycds module list 1
 *     json<TAB>source<TAB>/usr/lib/python3.13/json/__init__.py
 *     encodings<TAB>frozen
 *
 * Blank lines and lines starting with '#' are ignored.  "source" entries
 * name the source file the traced run imported (DUMP finds the module again
 * on sys.path and uses the path as a fallback); "frozen" entries name a
 * module of the interpreter's frozen start-up set.
 *
 * Tracing collects entries in memory (plain C, so it still works late in
 * finalization) and merges them into the list file at exit: under an
 * exclusive lock on "<list>.lock", the current file is re-read, new entries
 * are appended in the order they were first imported, and the result is
 * written to a temporary file in the same directory and renamed over the
 * list.  Concurrent tracers therefore never lose each other's entries.
 */

#include "Python.h"
#include "pycore_cds.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>             // flock()
#include <unistd.h>

#define LIST_HEADER "# pycds module list 1\n"

/* --- list entries ------------------------------------------------------ */

static char *
raw_strdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    char *copy = PyMem_RawMalloc(strlen(s) + 1);
    if (copy != NULL) {
        strcpy(copy, s);
    }
    return copy;
}

void
_PyCDS_ListClear(_PyCDS_List *list)
{
    for (Py_ssize_t i = 0; i < list->len; i++) {
        PyMem_RawFree(list->items[i].name);
        PyMem_RawFree(list->items[i].kind);
        PyMem_RawFree(list->items[i].path);
    }
    PyMem_RawFree(list->items);
    list->items = NULL;
    list->len = list->cap = 0;
}

static int
same_entry(const _PyCDS_ListEntry *e, const char *name, const char *kind,
           const char *path)
{
    if (strcmp(e->name, name) != 0 || strcmp(e->kind, kind) != 0) {
        return 0;
    }
    if (e->path == NULL || path == NULL) {
        return e->path == path;
    }
    return strcmp(e->path, path) == 0;
}

static int
list_contains(const _PyCDS_List *list, const char *name, const char *kind,
              const char *path)
{
    for (Py_ssize_t i = list->len - 1; i >= 0; i--) {
        if (same_entry(&list->items[i], name, kind, path)) {
            return 1;
        }
    }
    return 0;
}

/* Append unless already present.  Returns 1 if appended, 0 if present,
   -1 on memory error. */
static int
list_add(_PyCDS_List *list, const char *name, const char *kind,
         const char *path)
{
    if (list_contains(list, name, kind, path)) {
        return 0;
    }
    if (list->len == list->cap) {
        Py_ssize_t cap = list->cap ? list->cap * 2 : 64;
        _PyCDS_ListEntry *items = PyMem_RawRealloc(
            list->items, cap * sizeof(_PyCDS_ListEntry));
        if (items == NULL) {
            return -1;
        }
        list->items = items;
        list->cap = cap;
    }
    _PyCDS_ListEntry *e = &list->items[list->len];
    e->name = raw_strdup(name);
    e->kind = raw_strdup(kind);
    e->path = raw_strdup(path);
    if (e->name == NULL || e->kind == NULL || (path && e->path == NULL)) {
        PyMem_RawFree(e->name);
        PyMem_RawFree(e->kind);
        PyMem_RawFree(e->path);
        return -1;
    }
    list->len++;
    return 1;
}

static int
valid_module_name(const char *name)
{
    /* dotted identifiers; bytes >= 0x80 are accepted (UTF-8 identifiers) */
    int at_start = 1;
    if (*name == '\0') {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p == '.') {
            if (at_start) {
                return 0;
            }
            at_start = 1;
            continue;
        }
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || *p >= 0x80 || (!at_start && *p >= '0' && *p <= '9'))) {
            return 0;
        }
        at_start = 0;
    }
    return !at_start;
}

/* Parse one line in place.  Returns 1 for an entry, 0 for a blank or
   comment line, -1 for garbage. */
static int
parse_line(char *line, char **name, char **kind, char **path)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
        line[--n] = '\0';
    }
    if (n == 0 || line[0] == '#') {
        return 0;
    }
    char *tab1 = strchr(line, '\t');
    if (tab1 == NULL) {
        return -1;
    }
    *tab1 = '\0';
    *name = line;
    *kind = tab1 + 1;
    char *tab2 = strchr(*kind, '\t');
    *path = NULL;
    if (tab2 != NULL) {
        *tab2 = '\0';
        *path = tab2 + 1;
        if (strchr(*path, '\t') != NULL) {
            return -1;
        }
    }
    if (!valid_module_name(*name)) {
        return -1;
    }
    if (strcmp(*kind, "source") == 0) {
        return (*path != NULL && (*path)[0] == '/') ? 1 : -1;
    }
    if (strcmp(*kind, "frozen") == 0) {
        return (*path == NULL) ? 1 : -1;
    }
    return -1;
}

int
_PyCDS_ListRead(const char *path, _PyCDS_List *list, char *errbuf,
                size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(errbuf, errlen, "cannot read module list '%s': %s",
                 path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int result = 0;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        char *name, *kind, *epath;
        int r = (memchr(line, '\0', (size_t)len) != NULL)
                ? -1 : parse_line(line, &name, &kind, &epath);
        if (r < 0) {
            snprintf(errbuf, errlen, "module list '%s', line %ld: not a "
                     "module list entry", path, lineno);
            result = -1;
            break;
        }
        if (r == 1 && list_add(list, name, kind, epath) < 0) {
            snprintf(errbuf, errlen, "out of memory reading '%s'", path);
            result = -1;
            break;
        }
    }
    if (result == 0 && ferror(fp)) {
        snprintf(errbuf, errlen, "cannot read module list '%s': %s",
                 path, strerror(errno));
        result = -1;
    }
    free(line);
    fclose(fp);
    return result;
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

/* --- tracing ------------------------------------------------------------ */

static _PyCDS_List traced = {NULL, 0, 0};

void
_PyCDS_TraceModule(const char *kind, PyObject *name, PyObject *path)
{
    if (_PyCDS_GetSettings()->mode != _PyCDS_TRACE) {
        return;
    }
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
    if (valid_module_name(cname) && list_add(&traced, cname, kind, cpath) > 0) {
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

/* write() all of 'buf', retrying on EINTR and short writes */
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

/* Write 'list' to 'path' atomically: temporary file, fsync, rename. */
static int
write_list(const char *path, const _PyCDS_List *list)
{
    size_t n = strlen(path) + 32;
    char *tmp = PyMem_RawMalloc(n);
    if (tmp == NULL) {
        errno = ENOMEM;
        return -1;
    }
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        PyMem_RawFree(tmp);
        return -1;
    }
    int err = _PyCDS_WriteAll(fd, LIST_HEADER, strlen(LIST_HEADER));
    for (Py_ssize_t i = 0; err == 0 && i < list->len; i++) {
        const _PyCDS_ListEntry *e = &list->items[i];
        err = _PyCDS_WriteAll(fd, e->name, strlen(e->name))
              || _PyCDS_WriteAll(fd, "\t", 1)
              || _PyCDS_WriteAll(fd, e->kind, strlen(e->kind));
        if (err == 0 && e->path != NULL) {
            err = _PyCDS_WriteAll(fd, "\t", 1) || _PyCDS_WriteAll(fd, e->path, strlen(e->path));
        }
        if (err == 0) {
            err = _PyCDS_WriteAll(fd, "\n", 1);
        }
    }
    if (err == 0) {
        err = fsync(fd);
    }
    int saved = errno;
    if (close(fd) != 0 && err == 0) {
        err = -1;
        saved = errno;
    }
    if (err == 0 && rename(tmp, path) != 0) {
        err = -1;
        saved = errno;
    }
    if (err != 0) {
        unlink(tmp);
    }
    PyMem_RawFree(tmp);
    errno = saved;
    return err ? -1 : 0;
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
        if (list_add(&merged, e->name, e->kind, e->path) < 0) {
            goto done;
        }
    }
    if (merged.len == before && before > 0) {
        goto done;   /* nothing new: leave the file untouched */
    }
    if (write_list(path, &merged) < 0) {
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

void
_PyCDS_Fini(void)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode == _PyCDS_TRACE && s->list_path != NULL) {
        flush_trace(s->list_path);
    }
    if (s->mode == _PyCDS_SHARE) {
        _PyCDS_WriteStats();
        _PyCDS_ArchiveFini();
    }
    _PyCDS_ListClear(&traced);
}
