/* pycds: the module list file -- what TRACE writes and DUMP reads.
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
 * Plain C with the raw allocator: the tracer writes lists late in
 * finalization.
 *
 * Errors: -1 with a message in the caller's buffer (reading), or with
 * errno set (writing); never a Python exception.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#include <errno.h>

#define LIST_HEADER "# pycds module list 1\n"

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
int
_PyCDS_ListAdd(_PyCDS_List *list, const char *name, const char *kind,
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

int
_PyCDS_ValidModuleName(const char *name)
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
    if (!_PyCDS_ValidModuleName(*name)) {
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
        if (r == 1 && _PyCDS_ListAdd(list, name, kind, epath) < 0) {
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

/* Write 'list' to 'path', replacing the file durably (cds_fileio.c). */
int
_PyCDS_ListWrite(const char *path, const _PyCDS_List *list)
{
    _PyCDS_TempFile t;
    if (_PyCDS_TempFileOpen(&t, path) < 0) {
        return -1;
    }
    int err = _PyCDS_WriteAll(t.fd, LIST_HEADER, strlen(LIST_HEADER));
    for (Py_ssize_t i = 0; err == 0 && i < list->len; i++) {
        const _PyCDS_ListEntry *e = &list->items[i];
        err = _PyCDS_WriteAll(t.fd, e->name, strlen(e->name))
              || _PyCDS_WriteAll(t.fd, "\t", 1)
              || _PyCDS_WriteAll(t.fd, e->kind, strlen(e->kind));
        if (err == 0 && e->path != NULL) {
            err = _PyCDS_WriteAll(t.fd, "\t", 1)
                  || _PyCDS_WriteAll(t.fd, e->path, strlen(e->path));
        }
        if (err == 0) {
            err = _PyCDS_WriteAll(t.fd, "\n", 1);
        }
    }
    if (err != 0) {
        _PyCDS_TempFileAbort(&t);
        return -1;
    }
    return _PyCDS_TempFileCommit(&t);
}
