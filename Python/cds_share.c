/* pycds: SHARE -- use the mapped archive's modules in place.
 *
 * The archive is opened on first use (cds_filemap.c validates and maps
 * it); archive-wide work at start-up is the header and index validation
 * and interning the start-up strings (the seed).  Each module's objects
 * are its own, but for interned strings, which all modules share, so a
 * process prepares only the modules it imports, when it imports them
 * (cds_prepare.c).  An entry is served only for the exact source file it
 * was made from, current as stock would judge a .pyc (cds_stale.c).
 *
 * Errors: an archive or a module that cannot be used is a reason (a
 * constant string) logged under -X cds_verbose, and the normal import path
 * runs: lookups return NULL without an exception then.  Only a memory
 * error while making the heap copy of a served code object raises.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_code.h"          // _PyCoCached
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "cds_internal.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>                 // clock_gettime()

static struct {
    int state;                 /* 0: not opened yet, 1: mapped, -1: unusable */
    _PyCDS_Archive ar;         /* the mapped archive and its modules */
    const char **mod_reason;   /* why a CDS_MOD_BAD entry is, for
                                  _cds.check() */
    const char *reason;        /* why the archive is not used */
    int handler_installed;     /* the fault handler of -X cds_protect */
    Py_ssize_t served, stale, hashed, missed, rejected;
    int64_t open_ns, prepare_ns;   /* time spent opening, preparing */
} cds;

uintptr_t _PyCDS_ReadOnlyStart = 0;
uintptr_t _PyCDS_ReadOnlyEnd = 0;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
unusable(const char *path, const char *reason)
{
    cds.state = -1;
    cds.reason = reason;
    _PyCDS_Log(1, "archive '%s' not used: %s", path, reason);
    return -1;
}

/* Open and map the archive on first use; 0 when it is usable. */
int
_PyCDS_ShareOpen(void)
{
    if (cds.state != 0) {
        return cds.state > 0 ? 0 : -1;
    }
    const _PyCDS_Settings *settings = _PyCDS_GetSettings();
    const char *path = settings->archive_path;
    if (path == NULL) {
        /* nothing from the working directory unless named */
        cds.state = -1;
        cds.reason = "no archive given (-X cds_archive=PATH or "
                     "PYTHONCDSARCHIVE)";
        _PyCDS_Log(1, "share: %s", cds.reason);
        return -1;
    }
    if (!CDS_SUPPORTED) {
        return unusable(path, "not supported by this build");
    }
    const char *reason = _PyCDS_MapArchive(path, settings->force_relocation,
                                           &cds.ar.map);
    if (reason != NULL) {
        return unusable(path, reason);
    }
    const cds_header *h = cds.ar.map.hdr;
    cds.ar.mod_state = PyMem_RawCalloc(h->module_count ? h->module_count : 1, 1);
    size_t nbits = h->region_size[R_STR] / CDS_ALIGN / 8 + 1;
    cds.ar.str_ready = PyMem_RawCalloc(nbits, 1);
    cds.ar.str_valid = PyMem_RawCalloc(nbits, 1);
    if (cds.ar.mod_state == NULL || cds.ar.str_ready == NULL
        || cds.ar.str_valid == NULL)
    {
        PyMem_RawFree(cds.ar.mod_state);
        PyMem_RawFree(cds.ar.str_ready);
        PyMem_RawFree(cds.ar.str_valid);
        cds.ar.mod_state = cds.ar.str_ready = cds.ar.str_valid = NULL;
        _PyCDS_UnmapArchive(&cds.ar.map);
        return unusable(path, "out of memory");
    }
    cds.state = 1;
    _PyCDS_ReadOnlyStart = (uintptr_t)cds.ar.map.base + h->region_offset[R_COLD];
    _PyCDS_ReadOnlyEnd = _PyCDS_ReadOnlyStart + h->region_size[R_COLD];
    cds.ar.verify = settings->verify;
    if (settings->protect) {
        cds.ar.protect = 1;
        _PyCDS_ProtectArchive(&cds.ar.map);
    }
    _PyCDS_Log(1, "archive '%s' mapped at %p: %llu modules, %llu bytes%s",
               path, cds.ar.map.base, (unsigned long long)h->module_count,
               (unsigned long long)cds.ar.map.size,
               (cds.ar.map.archive_delta || cds.ar.map.image_delta)
               ? ", relocated on use" : "");
    return 0;
}

/* Prepare index entry i once; whether it can be served. */
static int
module_ready(size_t i)
{
    if (cds.ar.mod_state[i] == CDS_MOD_UNTOUCHED) {
        const cds_index_entry *e = &cds.ar.map.index[i];
        const char *name = cds.ar.map.strtab + e->name_off;
        int64_t t0 = now_ns();
        const char *reason = _PyCDS_PrepareModule(&cds.ar, e, name);
        cds.prepare_ns += now_ns() - t0;
        if (reason != NULL && reason[0] != '\0') {
            _PyCDS_Log(1, "module %s: %s", name, reason);
        }
        if (reason != NULL && cds.mod_reason == NULL) {
            /* only for _cds.check(): allocated when a module fails */
            cds.mod_reason = PyMem_RawCalloc(cds.ar.map.hdr->module_count,
                                             sizeof(char *));
        }
        if (reason != NULL && cds.mod_reason != NULL) {
            cds.mod_reason[i] = reason[0] ? reason : "cannot be prepared";
        }
        cds.ar.mod_state[i] = reason == NULL ? CDS_MOD_READY : CDS_MOD_BAD;
    }
    return cds.ar.mod_state[i] == CDS_MOD_READY;
}

/* A module's own code object and the class bodies it defines run once,
   when the module is imported, and running writes to their bytecode (the
   adaptive interpreter's counters): serve copies on the heap, which are
   freed after the import as the code objects from a .pyc are, and leave the
   archived ones unwritten.  The copies refer to the same archived names,
   tables and other constants; functions' code stays archived. */
static PyObject *
copy_module_code(PyCodeObject *co)
{
    /* the constants, with the class bodies copied */
    PyObject *consts = co->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(consts);
    Py_ssize_t bodies = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        bodies += _PyCDS_IsClassBody(PyTuple_GET_ITEM(consts, i));
    }
    if (bodies) {
        consts = PyTuple_New(n);
        if (consts == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
            c = _PyCDS_IsClassBody(c) ? copy_module_code((PyCodeObject *)c)
                                 : Py_NewRef(c);
            if (c == NULL) {
                Py_DECREF(consts);
                return NULL;
            }
            PyTuple_SET_ITEM(consts, i, c);
        }
    }
    else {
        Py_INCREF(consts);
    }
    PyCodeObject *copy = PyObject_NewVar(PyCodeObject, &PyCode_Type,
                                         Py_SIZE(co));
    if (copy == NULL) {
        Py_DECREF(consts);
        return NULL;
    }
    size_t start = offsetof(PyCodeObject, co_consts);
    memcpy((char *)copy + start, (char *)co + start,
           _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co)) - start);
    copy->co_consts = consts;
    Py_INCREF(copy->co_names);
    Py_INCREF(copy->co_exceptiontable);
    Py_INCREF(copy->co_localsplusnames);
    Py_INCREF(copy->co_localspluskinds);
    Py_INCREF(copy->co_filename);
    Py_INCREF(copy->co_name);
    Py_INCREF(copy->co_qualname);
    Py_INCREF(copy->co_linetable);
    _PyCode_InitArchived(copy);
    return (PyObject *)copy;
}

/* Intern the seed: the start-up strings at the start of R_STR. */
static int
intern_seed(PyInterpreterState *interp)
{
    const cds_header *h = cds.ar.map.hdr;
    uint64_t off = h->region_offset[R_STR];
    uint64_t end = off + h->seed_size;
    if (_PyCDS_Checksum(0, cds.ar.map.base + off, h->seed_size) != h->seed_checksum) {
        return unusable(cds.ar.map.path, "start-up strings checksum mismatch "
                                  "(corrupt archive)");
    }
    Py_ssize_t n = 0;
    while (off < end) {
        PyASCIIObject *s = _PyCDS_SharedString(&cds.ar, off);
        if (s == NULL) {
            return unusable(cds.ar.map.path, "bad start-up string (corrupt archive)");
        }
        size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                       : sizeof(PyCompactUnicodeObject);
        off += (header + ((uint64_t)s->length + 1) * s->state.kind + 15)
               & ~(uint64_t)15;
        _PyCDS_SetupSharedString(&cds.ar, (PyObject *)s);
        PyObject *t = _PyUnicode_InternArchived(interp, (PyObject *)s);
        if (t != (PyObject *)s) {
            Py_DECREF(t);     /* interned earlier: fixups redirect to it */
        }
        n++;
    }
    _PyCDS_Log(2, "%zd start-up strings interned", n);
    return 0;
}

/* Main interpreter start-up: map the archive and intern its start-up
   strings, before the runtime interns its own copies. */
void
_PyCDS_ShareInit(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp) || cds.state != 0) {
        return;
    }
    int64_t t0 = now_ns();
    if (_PyCDS_ShareOpen() == 0) {
        /* on failure nothing more of the archive is used; the strings
           interned so far are valid, immortal objects */
        (void)intern_seed(interp);
    }
    cds.open_ns = now_ns() - t0;
}

/* Before site runs: the fault handler of -X cds_protect, after
   -X faulthandler's. */
void
_PyCDS_ShareBeforeSite(PyInterpreterState *interp)
{
    if (cds.ar.protect && !cds.handler_installed
        && _Py_IsMainInterpreter(interp))
    {
        _PyCDS_InstallFaultHandler();
        cds.handler_installed = 1;
    }
}

static int
compare_key(const cds_index_entry *e, uint32_t kind, const char *name,
            size_t len)
{
    if (e->kind != kind) {
        return e->kind < kind ? -1 : 1;
    }
    const char *ename = cds.ar.map.strtab + e->name_off;
    int c = memcmp(ename, name, e->name_len < len ? e->name_len : len);
    if (c != 0) {
        return c;
    }
    return e->name_len < len ? -1 : (e->name_len > len ? 1 : 0);
}

/* The first index entry with this (kind, name), or where it would be. */
static size_t
first_entry(uint32_t kind, const char *cname, size_t len)
{
    size_t lo = 0, hi = cds.ar.map.hdr->module_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_key(&cds.ar.map.index[mid], kind, cname, len) < 0) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* Whether the archive holds a usable entry for the source module 'name'
   made from 'path' (any path if 'path' is NULL).  For the finder's fast
   path (cds_finder.c): 0 when no archive is in use.  Never raises. */
int
_PyCDS_ArchiveHasSource(PyObject *name, PyObject *path)
{
    if (!_Py_IsMainInterpreter(_PyInterpreterState_GET())
        || _PyCDS_ShareOpen() < 0)
    {
        return 0;
    }
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (cname == NULL
        || (path != NULL && _PyCDS_EncodePath(path, &bpath, &cpath) < 0))
    {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    for (size_t i = first_entry(KIND_SOURCE, cname, (size_t)len);
         i < cds.ar.map.hdr->module_count
         && compare_key(&cds.ar.map.index[i], KIND_SOURCE, cname, (size_t)len) == 0;
         i++)
    {
        const cds_index_entry *e = &cds.ar.map.index[i];
        if (cds.ar.mod_state[i] != CDS_MOD_BAD
            && (cpath == NULL
                || (e->path_len == strlen(cpath)
                    && memcmp(cds.ar.map.strtab + e->path_off, cpath,
                              e->path_len) == 0)))
        {
            found = 1;
            break;
        }
    }
    Py_XDECREF(bpath);
    return found;
}

PyObject *
_PyCDS_ArchiveLookup(const char *kindname, PyObject *name, PyObject *path)
{
    /* Archived objects are shared by the whole process; subinterpreters
       keep their normal imports. */
    PyInterpreterState *interp = _PyInterpreterState_GET();
    if (!_Py_IsMainInterpreter(interp) || _PyCDS_ShareOpen() < 0) {
        return NULL;
    }
    uint32_t kind = (kindname[0] == 'f') ? KIND_FROZEN : KIND_SOURCE;
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    if (cname == NULL) {
        PyErr_Clear();
        return NULL;
    }
    size_t lo = first_entry(kind, cname, (size_t)len);
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (path != NULL && _PyCDS_EncodePath(path, &bpath, &cpath) < 0) {
        return NULL;
    }
    size_t i = lo;
    for (; i < cds.ar.map.hdr->module_count
           && compare_key(&cds.ar.map.index[i], kind, cname, (size_t)len) == 0; i++) {
        const cds_index_entry *e = &cds.ar.map.index[i];
        if (kind == KIND_FROZEN) {
            break;
        }
        if (e->path_len == strlen(cpath)
            && memcmp(cds.ar.map.strtab + e->path_off, cpath, e->path_len) == 0) {
            break;
        }
    }
    if (i >= cds.ar.map.hdr->module_count
        || compare_key(&cds.ar.map.index[i], kind, cname, (size_t)len) != 0)
    {
        cds.missed++;
        _PyCDS_Log(2, "miss: %s (not in the archive)", cname);
        Py_XDECREF(bpath);
        return NULL;
    }
    const cds_index_entry *e = &cds.ar.map.index[i];
    if (kind == KIND_SOURCE) {
        /* the source must be the file the entry was made from */
        int hashed;
        const char *why = _PyCDS_SourceStale(
            e, cpath, _PyCDS_GetSettings()->check_source, &hashed);
        cds.hashed += hashed;
        if (why != NULL) {
            cds.stale++;
            _PyCDS_Log(1, "stale: %s (%s: %s)", cname, cpath, why);
            Py_DECREF(bpath);
            return NULL;
        }
    }
    Py_XDECREF(bpath);
    if (!module_ready(i)) {
        cds.rejected++;
        return NULL;
    }
    cds.served++;
    _PyCDS_Log(2, "served: %s", cname);
    return copy_module_code((PyCodeObject *)(cds.ar.map.base + e->code));
}

/* One entry of _PyCDS_ArchiveCheck(): (kind, name, path, problem). */
static PyObject *
check_entry(size_t i, int check_source)
{
    const cds_index_entry *e = &cds.ar.map.index[i];
    const char *problem = NULL;
    char buf[200];
    if (!module_ready(i)) {
        problem = cds.mod_reason && cds.mod_reason[i]
                  ? cds.mod_reason[i] : "cannot be prepared";
    }
    else if (e->kind == KIND_SOURCE) {
        /* the path as the entry holds it: NUL-terminated copy */
        PyObject *path = PyBytes_FromStringAndSize(
            cds.ar.map.strtab + e->path_off, (Py_ssize_t)e->path_len);
        if (path == NULL) {
            return NULL;
        }
        int hashed;
        const char *why = NULL;
        if (strlen(PyBytes_AS_STRING(path)) != e->path_len) {
            why = "bad path";
        }
        else {
            why = _PyCDS_SourceStale(e, PyBytes_AS_STRING(path),
                                     check_source, &hashed);
        }
        Py_DECREF(path);
        if (why != NULL) {
            snprintf(buf, sizeof(buf), "stale: %s", why);
            problem = buf;
        }
    }
    return Py_BuildValue(
        "(sNNz)", e->kind == KIND_SOURCE ? "source" : "frozen",
        PyUnicode_DecodeUTF8(cds.ar.map.strtab + e->name_off,
                             (Py_ssize_t)e->name_len, "surrogateescape"),
        e->kind == KIND_SOURCE
        ? PyUnicode_DecodeFSDefaultAndSize(cds.ar.map.strtab + e->path_off,
                                           (Py_ssize_t)e->path_len)
        : Py_NewRef(Py_None),
        problem);
}

/* Prepare every module of the archive (verify, relocate, fix up) and
   check every source entry against its file now: a list of (kind, name,
   path, problem), problem None when the entry can be served.  None when
   no archive is in use (see _PyCDS_GetShareStats() for why). */
PyObject *
_PyCDS_ArchiveCheck(int check_source)
{
    PyInterpreterState *interp = _PyInterpreterState_GET();
    if (!_Py_IsMainInterpreter(interp) || _PyCDS_ShareOpen() < 0) {
        Py_RETURN_NONE;
    }
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < cds.ar.map.hdr->module_count; i++) {
        PyObject *item = check_entry(i, check_source);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(item);
    }
    return list;
}

/* Called when the runtime finalizes.  The mapping stays (objects that were
   never freed may still point into it), but a runtime initialized again in
   this process (embedding) imports normally: the interned strings the
   archive's fixups resolved to belonged to the finalized runtime. */
void
_PyCDS_ShareFini(void)
{
    if (cds.state > 0) {
        cds.state = -1;
        cds.reason = "the runtime that mapped the archive was finalized";
    }
    else if (cds.state == 0) {
        cds.state = -1;
        cds.reason = "not used before the runtime was finalized";
    }
}

int
_PyCDS_IsArchivedObject(PyObject *op)
{
    return cds.ar.map.base != NULL && (char *)op >= cds.ar.map.base
           && (char *)op < cds.ar.map.base + cds.ar.map.size;
}

void
_PyCDS_GetShareStats(_PyCDS_ShareStats *out)
{
    memset(out, 0, sizeof(*out));
    out->active = cds.state > 0;
    out->reason = cds.reason;
    out->modules = cds.state > 0 ? (Py_ssize_t)cds.ar.map.hdr->module_count : 0;
    out->served = cds.served;
    out->stale = cds.stale;
    out->hashed = cds.hashed;
    out->missed = cds.missed;
    out->rejected = cds.rejected;
    out->prepared = cds.ar.prepared;
    out->relocated = cds.ar.relocated;
    out->at_preferred_address = cds.state > 0 && cds.ar.map.archive_delta == 0;
    out->protected = cds.ar.protect;
    out->open_seconds = cds.open_ns / 1e9;
    out->prepare_seconds = cds.prepare_ns / 1e9;
}
