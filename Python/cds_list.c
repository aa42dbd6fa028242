/* pycds: the module list file -- what TRACE writes and DUMP reads.
 *
 * A module list is UTF-8 text, one module per line:
 *
 *     # pycds module list 1
 *     json<TAB>source<TAB>/usr/lib/python3.13/json/__init__.py
 *     encodings<TAB>frozen
 *     re<TAB>regex<TAB>0 s 5c642b
 *     builtins<TAB>string<TAB>258 256 13 782b31
 *
 * Blank lines and lines starting with '#' are ignored.  "source" entries
 * name the source file the traced run imported (DUMP finds the module again
 * on sys.path and uses the path as a fallback); "frozen" entries name a
 * module of the interpreter's frozen start-up set; "regex" entries a
 * pattern re compiled, with its flags (cds_regex.c); "string" entries a
 * source exec() or eval() compiled (cds_exec.c).
 *
 * Plain C with the raw allocator: the tracer writes lists late in
 * finalization.
 *
 * Errors: -1 with a message in the caller's buffer (reading), or with
 * errno set (writing); never a Python exception.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_fileutils.h"     // _Py_DecodeUTF8Ex()
#include "cds_internal.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

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
    PyMem_RawFree(list->slots);
    memset(list, 0, sizeof(*list));
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

/* The index of entries, by hash, so that merging a trace into a long list
   is linear: an open-addressing table of entry numbers + 1 (0: free). */
static size_t
entry_hash(const char *name, const char *kind, const char *path)
{
    uint64_t h = 0xcbf29ce484222325ULL;     /* FNV-1a */
    const char *parts[3] = {name, kind, path ? path : ""};
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
            h = (h ^ *p) * 0x100000001b3ULL;
        }
        h = (h ^ '\t') * 0x100000001b3ULL;
    }
    return (size_t)h;
}

/* The slot of this entry, or of the free slot where it would go. */
static size_t *
find_slot(const _PyCDS_List *list, const char *name, const char *kind,
          const char *path)
{
    size_t mask = list->nslots - 1;
    for (size_t i = entry_hash(name, kind, path) & mask;; i = (i + 1) & mask) {
        size_t *slot = &list->slots[i];
        if (*slot == 0
            || same_entry(&list->items[*slot - 1], name, kind, path))
        {
            return slot;
        }
    }
}

/* Keep the table at most half full. */
static int
grow_slots(_PyCDS_List *list)
{
    if ((size_t)list->len + 1 <= list->nslots / 2) {
        return 0;
    }
    size_t n = list->nslots ? list->nslots * 2 : 128;
    size_t *old = list->slots;
    list->slots = PyMem_RawCalloc(n, sizeof(size_t));
    if (list->slots == NULL) {
        list->slots = old;
        return -1;
    }
    list->nslots = n;
    for (Py_ssize_t i = 0; i < list->len; i++) {
        const _PyCDS_ListEntry *e = &list->items[i];
        *find_slot(list, e->name, e->kind, e->path) = (size_t)i + 1;
    }
    PyMem_RawFree(old);
    return 0;
}

/* Append unless already present.  Returns 1 if appended, 0 if present,
   -1 on memory error. */
int
_PyCDS_ListAdd(_PyCDS_List *list, const char *name, const char *kind,
         const char *path)
{
    if (grow_slots(list) < 0) {
        return -1;
    }
    size_t *slot = find_slot(list, name, kind, path);
    if (*slot != 0) {
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
    *slot = (size_t)list->len;
    return 1;
}

/* Whether 's' is well-formed UTF-8 (CPython's strict decoder; raw
   memory, so it works late in finalization). */
static int
valid_utf8(const char *s)
{
    wchar_t *wstr;
    if (_Py_DecodeUTF8Ex(s, (Py_ssize_t)strlen(s), &wstr, NULL, NULL,
                         _Py_ERROR_STRICT) != 0)
    {
        return 0;       /* not UTF-8, or out of memory: not a name */
    }
    PyMem_RawFree(wstr);
    return 1;
}

int
_PyCDS_ValidModuleName(const char *name)
{
    /* dotted identifiers; bytes >= 0x80 are accepted if they are UTF-8
       (non-ASCII identifiers) */
    int at_start = 1;
    if (*name == '\0' || !valid_utf8(name)) {
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

/* The fields after "regex" and "string" (cds_regex.c, cds_exec.c):
   'numbers' decimal numbers of at most 10 digits, for "regex" then "s" or
   "b", then lowercase hex digits in pairs, separated by single spaces. */
static int
data_field_ok(const char *p, int numbers, int type)
{
    for (int k = 0; k < numbers; k++) {
        const char *start = p;
        while (*p >= '0' && *p <= '9' && p - start < 10) {
            p++;
        }
        if (p == start || *p++ != ' ') {
            return 0;
        }
    }
    if (type && ((p[0] != 's' && p[0] != 'b') || p[1] != ' ')) {
        return 0;
    }
    p += type ? 2 : 0;
    size_t n = strspn(p, "0123456789abcdef");
    return p[n] == '\0' && n % 2 == 0;
}

char *
_PyCDS_ListHexField(const char *prefix, const void *data, size_t n)
{
    size_t plen = strlen(prefix);
    char *field = n <= CDS_LIST_MAX_LINE / 2
                  ? PyMem_RawMalloc(plen + 2 * n + 1) : NULL;
    if (field != NULL) {
        memcpy(field, prefix, plen);
        for (size_t i = 0; i < n; i++) {
            snprintf(field + plen + 2 * i, 3, "%02x",
                     ((const unsigned char *)data)[i]);
        }
        field[plen + 2 * n] = '\0';
    }
    return field;
}

char *
_PyCDS_ListUnhex(const char *hex, size_t *n)
{
    *n = strlen(hex) / 2;
    char *raw = PyMem_RawMalloc(*n + 1);
    for (size_t i = 0; raw != NULL && i < *n; i++) {
        unsigned int byte;
        sscanf(hex + 2 * i, "%2x", &byte);
        raw[i] = (char)byte;
    }
    if (raw != NULL) {
        raw[*n] = '\0';
    }
    return raw;
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
    if (strcmp(*kind, "regex") == 0) {
        return (*path != NULL && data_field_ok(*path, 1, 1)) ? 1 : -1;
    }
    if (strcmp(*kind, "string") == 0) {
        return (*path != NULL && data_field_ok(*path, 3, 0)) ? 1 : -1;
    }
    return -1;
}

/* Read one line of at most CDS_LIST_MAX_LINE bytes into 'buf' (of that
   size + 2): 1, 0 at the end of the file, -1 for a line too long or one
   holding a NUL byte, -2 for a read error. */
static int
read_line(FILE *fp, char *buf, size_t size)
{
    size_t n = 0;
    int c;
    while ((c = getc(fp)) != EOF) {
        if (n + 2 >= size || c == '\0') {
            return -1;
        }
        buf[n++] = (char)c;
        if (c == '\n') {
            break;
        }
    }
    buf[n] = '\0';
    if (ferror(fp)) {
        return -2;
    }
    return n > 0 ? 1 : 0;
}

int
_PyCDS_ListRead(const char *path, _PyCDS_List *list, char *errbuf,
                size_t errlen)
{
    struct stat st;
    int fd = _PyCDS_OpenRegular(path, &st);
    FILE *fp = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (fp == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(errbuf, errlen, "cannot read module list '%s': %s", path,
                 errno == EINVAL ? "not a regular file" : strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    char *line = PyMem_RawMalloc(CDS_LIST_MAX_LINE + 2);
    long lineno = 0;
    int result = line ? 0 : -1, r;
    if (line == NULL) {
        snprintf(errbuf, errlen, "out of memory reading '%s'", path);
    }
    while (result == 0 && (r = read_line(fp, line, CDS_LIST_MAX_LINE + 2)) > 0) {
        lineno++;
        char *name, *kind, *epath;
        int entry = parse_line(line, &name, &kind, &epath);
        if (entry < 0) {
            snprintf(errbuf, errlen, "module list '%s', line %ld: not a "
                     "module list entry", path, lineno);
            result = -1;
        }
        else if (entry == 1 && list->len >= CDS_LIST_MAX_ENTRIES) {
            snprintf(errbuf, errlen, "module list '%s': more than %d "
                     "entries", path, CDS_LIST_MAX_ENTRIES);
            result = -1;
        }
        else if (entry == 1 && _PyCDS_ListAdd(list, name, kind, epath) < 0) {
            snprintf(errbuf, errlen, "out of memory reading '%s'", path);
            result = -1;
        }
    }
    if (result == 0 && r == -1) {
        snprintf(errbuf, errlen, "module list '%s', line %ld: not a module "
                 "list entry (a NUL byte, or longer than %d bytes)",
                 path, lineno + 1, CDS_LIST_MAX_LINE);
        result = -1;
    }
    else if (result == 0 && r == -2) {
        snprintf(errbuf, errlen, "cannot read module list '%s': %s",
                 path, strerror(errno));
        result = -1;
    }
    PyMem_RawFree(line);
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
