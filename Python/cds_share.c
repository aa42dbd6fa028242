/* pycds: SHARE -- use the mapped archive's modules in place.
 *
 * The archive is opened on first use (cds_filemap.c validates and maps
 * it); archive-wide work at start-up is the header and index validation
 * and interning the start-up strings (the seed).  Each module's objects
 * are its own, but for interned strings, which all modules share, so a
 * process prepares only the modules it imports, when it imports them:
 * check its index entry, verify its checksum (which covers the shared
 * strings it uses), relocate its pointers if the archive or the
 * interpreter image moved, intern its identifiers, build its frozensets,
 * and announce its code objects.  An entry is served only for the exact
 * source file it was made from (path, size, mtime).
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

enum { MOD_UNTOUCHED = 0, MOD_READY = 1, MOD_BAD = 2 };

static struct {
    int state;                 /* 0: not opened yet, 1: mapped, -1: unusable */
    _PyCDS_Map map;            /* the mapped archive */
    uint8_t *mod_state;        /* MOD_* of each index entry */
    const char **mod_reason;   /* why a MOD_BAD entry is, for _cds.check() */
    uint8_t *str_ready;        /* a bit per 16-byte slot of R_STR: the
                                  shared string there is set up */
    uint8_t *str_valid;        /* and: checked well-formed */
    const char *reason;        /* why the archive is not used */
    int protect;               /* -X cds_protect: cold region read-only */
    int handler_installed;     /* the fault handler of -X cds_protect */
    Py_ssize_t served, stale, hashed, missed, rejected, prepared, relocated;
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
                                           &cds.map);
    if (reason != NULL) {
        return unusable(path, reason);
    }
    const cds_header *h = cds.map.hdr;
    cds.mod_state = PyMem_RawCalloc(h->module_count ? h->module_count : 1, 1);
    size_t nbits = h->region_size[R_STR] / CDS_ALIGN / 8 + 1;
    cds.str_ready = PyMem_RawCalloc(nbits, 1);
    cds.str_valid = PyMem_RawCalloc(nbits, 1);
    if (cds.mod_state == NULL || cds.str_ready == NULL
        || cds.str_valid == NULL)
    {
        PyMem_RawFree(cds.mod_state);
        PyMem_RawFree(cds.str_ready);
        PyMem_RawFree(cds.str_valid);
        cds.mod_state = cds.str_ready = cds.str_valid = NULL;
        _PyCDS_UnmapArchive(&cds.map);
        return unusable(path, "out of memory");
    }
    cds.state = 1;
    _PyCDS_ReadOnlyStart = (uintptr_t)cds.map.base + h->region_offset[R_COLD];
    _PyCDS_ReadOnlyEnd = _PyCDS_ReadOnlyStart + h->region_size[R_COLD];
    if (settings->protect) {
        cds.protect = 1;
        _PyCDS_ProtectArchive(&cds.map);
    }
    _PyCDS_Log(1, "archive '%s' mapped at %p: %llu modules, %llu bytes%s",
               path, cds.map.base, (unsigned long long)h->module_count,
               (unsigned long long)cds.map.size,
               (cds.map.archive_delta || cds.map.image_delta)
               ? ", relocated on use" : "");
    return 0;
}

/* The first use of a shared string (a well-formed one: shared_string())
   in this process: its type, and the fields no checksum covers because
   the process writes them (the cached hash, the interned state), are set
   as the dump wrote them, whatever the file holds.  Fields already right
   are not written, so that their pages can stay shared. */
static void
setup_shared_string(PyObject *s)
{
    size_t i = (size_t)((char *)s - cds.map.base
                        - cds.map.hdr->region_offset[R_STR]) / CDS_ALIGN;
    uint8_t bit = (uint8_t)(1 << (i & 7));
    if (cds.str_ready[i >> 3] & bit) {
        return;
    }
    cds.str_ready[i >> 3] |= bit;
    if (Py_TYPE(s) != &PyUnicode_Type) {
        Py_SET_TYPE(s, &PyUnicode_Type);
    }
    if (((PyASCIIObject *)s)->hash != -1) {
        ((PyASCIIObject *)s)->hash = -1;
    }
    if (((PyASCIIObject *)s)->state.interned != SSTATE_NOT_INTERNED) {
        ((PyASCIIObject *)s)->state.interned = SSTATE_NOT_INTERNED;
    }
}

/* The shared string at file offset 'off', or NULL if what is there is not
   a well-formed archived string: checked before anything reads it. */
static PyASCIIObject *
shared_string(uint64_t off)
{
    const cds_header *h = cds.map.hdr;
    uint64_t lo = h->region_offset[R_STR], hi = lo + h->region_size[R_STR];
    if (off < lo || off % CDS_ALIGN != 0 || off + sizeof(PyASCIIObject) > hi) {
        return NULL;
    }
    PyASCIIObject *s = (PyASCIIObject *)(cds.map.base + off);
    uintptr_t type = (uintptr_t)s->ob_base.ob_type;
    if (!_Py_IsImmortal((PyObject *)s)
        || (type != (uintptr_t)&PyUnicode_Type
            && type != (uintptr_t)&PyUnicode_Type - cds.map.image_delta)
        || !s->state.compact || !s->state.statically_allocated
        || (s->state.kind != 1 && s->state.kind != 2 && s->state.kind != 4)
        || (s->state.ascii && s->state.kind != 1)
        || s->length < 0 || (uint64_t)s->length > hi - off)
    {
        return NULL;
    }
    size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                   : sizeof(PyCompactUnicodeObject);
    if (off + header + ((uint64_t)s->length + 1) * s->state.kind > hi) {
        return NULL;
    }
    /* checked: the structural checks rely on it (cds_verify.c) */
    uint64_t i = (off - lo) / CDS_ALIGN;
    cds.str_valid[i / 8] |= (uint8_t)(1 << (i & 7));
    return s;
}


#ifndef MADV_POPULATE_WRITE
#  define MADV_POPULATE_WRITE 23      /* Linux 5.14 */
#endif

/* Relocation writes to every page of a module (each object's type pointer
   moves with the interpreter image), so each page would take a read fault
   for the checksum and then a copy-on-write fault.  Making the module's
   pages private in one call first is cheaper; the contents are unchanged.
   Only a hint: older kernels refuse it and the faults happen as before. */
static void
populate_for_relocation(const cds_index_entry *e)
{
    uintptr_t page = (uintptr_t)CDS_PAGE - 1;
    for (int r = 0; r < CDS_NRANGES; r++) {
        if (e->range[r][0] == e->range[r][1]
            || (cds.protect && r + 1 == R_COLD))   /* mapped read-only */
        {
            continue;
        }
        uintptr_t lo = (uintptr_t)cds.map.base + e->range[r][0];
        uintptr_t hi = (uintptr_t)cds.map.base + e->range[r][1];
        lo &= ~page;
        hi = (hi + page) & ~page;
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
    }
}

#ifdef Py_DEBUG
/* In a debug build, as CPython frees its immortal interned strings at
   finalization there so that -X showrefcount can report no leak, what a
   process allocated for archived objects is released when the interpreter
   is cleared (its dict is, after its modules): the frozensets that fixups
   made (the archive's slots borrow them from a list in the interpreter's
   dict) and the caches of co_code etc. that archived code objects made on
   the heap.  A release build keeps both until the process exits. */
static void
release_archived_caches(PyObject *capsule)
{
    if (cds.map.base == NULL) {
        return;
    }
    const cds_fixup *all = (const cds_fixup *)(cds.map.base + cds.map.hdr->fixup_offset);
    for (uint64_t i = 0; i < cds.map.hdr->module_count; i++) {
        const cds_index_entry *e = &cds.map.index[i];
        if (cds.mod_state[i] != MOD_READY) {
            continue;
        }
        for (uint64_t k = 0; k < e->fixup_count; k++) {
            const cds_fixup *f = &all[e->fixup_start + k];
            if (f->kind != FIXUP_CODE) {
                continue;
            }
            PyCodeObject *co = (PyCodeObject *)(cds.map.base + f->offset);
            _PyCoCached *cached = co->_co_cached;
            if (cached != NULL) {
                co->_co_cached = NULL;
                Py_XDECREF(cached->_co_code);
                Py_XDECREF(cached->_co_cellvars);
                Py_XDECREF(cached->_co_freevars);
                Py_XDECREF(cached->_co_varnames);
                PyMem_Free(cached);
            }
        }
    }
}

/* Add 'obj' (or nothing, if NULL) to the list of what is released with
   the interpreter, made with the capsule that releases the caches. */
static int
keep_until_finalization(PyInterpreterState *interp, PyObject *obj)
{
    PyObject *dict = PyInterpreterState_GetDict(interp);      // borrowed
    if (dict == NULL) {
        return -1;
    }
    PyObject *list;
    if (PyDict_GetItemStringRef(dict, "_pycds_fixup_objects", &list) < 0) {
        return -1;
    }
    if (list == NULL) {
        PyObject *capsule = PyCapsule_New((void *)&cds, NULL,
                                          release_archived_caches);
        list = PyList_New(0);
        if (capsule == NULL || list == NULL
            || PyList_Append(list, capsule) < 0
            || PyDict_SetItemString(dict, "_pycds_fixup_objects", list) < 0)
        {
            Py_XDECREF(capsule);
            Py_XDECREF(list);
            return -1;
        }
        Py_DECREF(capsule);
    }
    int r = (obj == NULL) ? 0 : PyList_Append(list, obj);
    Py_DECREF(list);
    return r;
}
#endif

/* Whether everything the index entry points at is where it may be: its
   ranges within their regions, its relocations and fixups within their
   tables, its code object and every fixup slot within its own ranges. */
static int
entry_ok(const cds_index_entry *e)
{
    const cds_header *h = cds.map.hdr;
    for (int r = 0; r < CDS_NRANGES; r++) {
        uint64_t lo = h->region_offset[r + 1], hi = lo + h->region_size[r + 1];
        if (e->range[r][0] > e->range[r][1] || e->range[r][0] < lo
            || e->range[r][1] > hi)
        {
            return 0;
        }
    }
    return !(e->reloc_start > h->reloc_count
             || e->reloc_count > h->reloc_count - e->reloc_start
             || e->fixup_start > h->fixup_count
             || e->fixup_count > h->fixup_count - e->fixup_start
             || !_PyCDS_InModule(e, e->code, sizeof(PyCodeObject)));
}

static int
fixups_ok(const cds_index_entry *e, const cds_fixup *fixups)
{
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (!_PyCDS_InModule(e, fixups[k].offset, 8) || (fixups[k].offset & 7)
            || fixups[k].kind < FIXUP_INTERN || fixups[k].kind > FIXUP_CODE)
        {
            return 0;
        }
    }
    return 1;
}

/* The module's checksum, as cds_builder.c's module_checksum() makes it;
   *bad_string is set if a shared string it interns is malformed. */
static uint64_t
module_checksum(const cds_index_entry *e, const cds_fixup *fixups,
                int *bad_string)
{
    const char *base = cds.map.base;
    uint64_t c = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        c = _PyCDS_Checksum(c, base + e->range[r][0],
                            e->range[r][1] - e->range[r][0]);
    }
    c = _PyCDS_Checksum(c, fixups, sizeof(cds_fixup) * e->fixup_count);
    uint64_t prev_target = UINT64_MAX;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (fixups[k].kind != FIXUP_INTERN) {
            continue;
        }
        /* the slot still holds the address the dump laid out */
        uint64_t target = *(const uint64_t *)(base + fixups[k].offset)
                          - cds.map.hdr->preferred_base;
        if (target == prev_target) {
            continue;    /* the same string as the fixup before */
        }
        prev_target = target;
        const PyASCIIObject *str = shared_string(target);
        if (str == NULL) {
            *bad_string = 1;
            return 0;
        }
        c = _PyCDS_StringDigest(c, str);
    }
    return c;
}

/* Relocate only when something moved: otherwise nothing is written.  Each
   record is checked before it is applied, and only the records of what
   moved are (usually the image only: each object's type).  A bad record
   leaves the module half relocated, but a module that fails here is never
   used, and its pages are its own. */
static int
relocate_module(const cds_index_entry *e, const uint64_t *relocs)
{
    char *base = cds.map.base;
    if (cds.protect) {
        _PyCDS_ProtectRange(e->range[R_COLD - 1][0], e->range[R_COLD - 1][1], 1);
    }
    int bad = 0;
    uint64_t prev = 0;      /* slots strictly ascending: none moved twice */
    for (uint64_t k = 0; k < e->reloc_count; k++) {
        uint64_t rec = relocs[k];
        if (k > 0 && (rec & ~(uint64_t)7) <= prev) {
            bad = 1;
            break;
        }
        prev = rec & ~(uint64_t)7;
        intptr_t delta = (rec & 1) ? cds.map.image_delta : cds.map.archive_delta;
        if (delta == 0) {
            continue;
        }
        if ((rec & 6) || !_PyCDS_InModule(e, rec & ~(uint64_t)1, 8)) {
            bad = 1;
            break;
        }
        *(uint64_t *)(base + (rec & ~(uint64_t)1)) += (uint64_t)delta;
    }
    if (cds.protect) {
        _PyCDS_ProtectRange(e->range[R_COLD - 1][0], e->range[R_COLD - 1][1], 0);
    }
    return bad ? -1 : 0;
}

/* Run the module's fixups: intern its identifiers, build its frozensets,
   announce its code objects. */
static int
apply_fixups(const cds_index_entry *e, const cds_fixup *fixups,
             const char *name)
{
    char *base = cds.map.base;
    PyInterpreterState *interp = _PyInterpreterState_GET();
#ifdef Py_DEBUG
    if (keep_until_finalization(interp, NULL) < 0) {
        PyErr_Clear();
    }
#endif
    PyObject *last_s = NULL, *last_t = NULL;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        PyObject **slot = (PyObject **)(base + fixups[k].offset);
        switch (fixups[k].kind) {
            case FIXUP_INTERN: {
                /* consecutive fixups of the same string: intern it once */
                PyObject *s = *slot;
                setup_shared_string(s);
                PyObject *t = (s == last_s) ? last_t
                                            : _PyUnicode_InternArchived(interp, s);
                if (t != s) {
                    *slot = t;   /* owns the reference, never released */
                    if (s == last_s) {
                        Py_INCREF(t);
                    }
                }
                last_s = s;
                last_t = t;
                break;
            }
            case FIXUP_FROZENSET: {
                PyObject *fs = PyFrozenSet_New(*slot);
#ifdef Py_DEBUG
                if (fs != NULL && keep_until_finalization(interp, fs) < 0) {
                    Py_CLEAR(fs);
                }
#endif
                if (fs == NULL) {
                    PyErr_Clear();
                    _PyCDS_Log(1, "module %s: cannot rebuild a frozenset", name);
                    return -1;
                }
                *slot = fs;      /* owns the reference, never released */
#ifdef Py_DEBUG
                Py_DECREF(fs);   /* borrowed: see keep_until_finalization() */
#endif
                break;
            }
            case FIXUP_CODE:
                _PyCode_InitArchived((PyCodeObject *)slot);
                break;
        }
    }
    return 0;
}

/* Verify, relocate and fix up one module's objects, once per process;
   the reason it cannot be used, or NULL. */
static const char *
prepare_module(const cds_index_entry *e, const char *name)
{
    const cds_header *h = cds.map.hdr;
    char *base = cds.map.base;
    if (!entry_ok(e)) {
        return "bad index entry (corrupt archive)";
    }
    const uint64_t *relocs = (const uint64_t *)(base + h->reloc_offset)
                             + e->reloc_start;
    const cds_fixup *fixups = (const cds_fixup *)(base + h->fixup_offset)
                              + e->fixup_start;
    if (!fixups_ok(e, fixups)) {
        return "bad fixup (corrupt archive)";
    }
    int relocate = (cds.map.archive_delta != 0 || cds.map.image_delta != 0);
    if (relocate) {
        populate_for_relocation(e);
    }
    int bad_string = 0;
    uint64_t c = module_checksum(e, fixups, &bad_string);
    if (bad_string) {
        return "bad shared string (corrupt archive)";
    }
    if (c != e->checksum) {
        return "checksum mismatch (corrupt archive)";
    }
    if (relocate) {
        /* the relocations are read only when something moved */
        if (_PyCDS_Checksum(0, relocs, 8 * e->reloc_count) != e->reloc_checksum) {
            return "relocations checksum mismatch (corrupt archive)";
        }
        if (relocate_module(e, relocs) < 0) {
            return "bad relocation (corrupt archive)";
        }
        cds.relocated++;
    }
    /* what a forged archive could point anywhere (cds_verify.c) */
    const char *bad = _PyCDS_VerifyModule(&cds.map, e, fixups,
                                          cds.str_valid,
                                          _PyCDS_GetSettings()->verify);
    if (bad != NULL) {
        return bad;
    }
    if (apply_fixups(e, fixups, name) < 0) {
        return "";     /* logged by apply_fixups() */
    }
    cds.prepared++;
    return NULL;
}

/* Prepare index entry i once; whether it can be served. */
static int
module_ready(size_t i)
{
    if (cds.mod_state[i] == MOD_UNTOUCHED) {
        const cds_index_entry *e = &cds.map.index[i];
        const char *name = cds.map.strtab + e->name_off;
        int64_t t0 = now_ns();
        const char *reason = prepare_module(e, name);
        cds.prepare_ns += now_ns() - t0;
        if (reason != NULL && reason[0] != '\0') {
            _PyCDS_Log(1, "module %s: %s", name, reason);
        }
        if (reason != NULL && cds.mod_reason == NULL) {
            /* only for _cds.check(): allocated when a module fails */
            cds.mod_reason = PyMem_RawCalloc(cds.map.hdr->module_count,
                                             sizeof(char *));
        }
        if (reason != NULL && cds.mod_reason != NULL) {
            cds.mod_reason[i] = reason[0] ? reason : "cannot be prepared";
        }
        cds.mod_state[i] = reason == NULL ? MOD_READY : MOD_BAD;
    }
    return cds.mod_state[i] == MOD_READY;
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
    const cds_header *h = cds.map.hdr;
    uint64_t off = h->region_offset[R_STR];
    uint64_t end = off + h->seed_size;
    if (_PyCDS_Checksum(0, cds.map.base + off, h->seed_size) != h->seed_checksum) {
        return unusable(cds.map.path, "start-up strings checksum mismatch "
                                  "(corrupt archive)");
    }
    Py_ssize_t n = 0;
    while (off < end) {
        PyASCIIObject *s = shared_string(off);
        if (s == NULL) {
            return unusable(cds.map.path, "bad start-up string (corrupt archive)");
        }
        size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                       : sizeof(PyCompactUnicodeObject);
        off += (header + ((uint64_t)s->length + 1) * s->state.kind + 15)
               & ~(uint64_t)15;
        setup_shared_string((PyObject *)s);
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
    if (cds.protect && !cds.handler_installed
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
    const char *ename = cds.map.strtab + e->name_off;
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
    size_t lo = 0, hi = cds.map.hdr->module_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_key(&cds.map.index[mid], kind, cname, len) < 0) {
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
         i < cds.map.hdr->module_count
         && compare_key(&cds.map.index[i], KIND_SOURCE, cname, (size_t)len) == 0;
         i++)
    {
        const cds_index_entry *e = &cds.map.index[i];
        if (cds.mod_state[i] != MOD_BAD
            && (cpath == NULL
                || (e->path_len == strlen(cpath)
                    && memcmp(cds.map.strtab + e->path_off, cpath,
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
    for (; i < cds.map.hdr->module_count
           && compare_key(&cds.map.index[i], kind, cname, (size_t)len) == 0; i++) {
        const cds_index_entry *e = &cds.map.index[i];
        if (kind == KIND_FROZEN) {
            break;
        }
        if (e->path_len == strlen(cpath)
            && memcmp(cds.map.strtab + e->path_off, cpath, e->path_len) == 0) {
            break;
        }
    }
    if (i >= cds.map.hdr->module_count
        || compare_key(&cds.map.index[i], kind, cname, (size_t)len) != 0)
    {
        cds.missed++;
        _PyCDS_Log(2, "miss: %s (not in the archive)", cname);
        Py_XDECREF(bpath);
        return NULL;
    }
    const cds_index_entry *e = &cds.map.index[i];
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
    return copy_module_code((PyCodeObject *)(cds.map.base + e->code));
}

/* One entry of _PyCDS_ArchiveCheck(): (kind, name, path, problem). */
static PyObject *
check_entry(size_t i, int check_source)
{
    const cds_index_entry *e = &cds.map.index[i];
    const char *problem = NULL;
    char buf[200];
    if (!module_ready(i)) {
        problem = cds.mod_reason && cds.mod_reason[i]
                  ? cds.mod_reason[i] : "cannot be prepared";
    }
    else if (e->kind == KIND_SOURCE) {
        /* the path as the entry holds it: NUL-terminated copy */
        PyObject *path = PyBytes_FromStringAndSize(
            cds.map.strtab + e->path_off, (Py_ssize_t)e->path_len);
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
        PyUnicode_DecodeUTF8(cds.map.strtab + e->name_off,
                             (Py_ssize_t)e->name_len, "surrogateescape"),
        e->kind == KIND_SOURCE
        ? PyUnicode_DecodeFSDefaultAndSize(cds.map.strtab + e->path_off,
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
    for (size_t i = 0; list != NULL && i < cds.map.hdr->module_count; i++) {
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
    return cds.map.base != NULL && (char *)op >= cds.map.base
           && (char *)op < cds.map.base + cds.map.size;
}

void
_PyCDS_GetShareStats(_PyCDS_ShareStats *out)
{
    memset(out, 0, sizeof(*out));
    out->active = cds.state > 0;
    out->reason = cds.reason;
    out->modules = cds.state > 0 ? (Py_ssize_t)cds.map.hdr->module_count : 0;
    out->served = cds.served;
    out->stale = cds.stale;
    out->hashed = cds.hashed;
    out->missed = cds.missed;
    out->rejected = cds.rejected;
    out->prepared = cds.prepared;
    out->relocated = cds.relocated;
    out->at_preferred_address = cds.state > 0 && cds.map.archive_delta == 0;
    out->protected = cds.protect;
    out->open_seconds = cds.open_ns / 1e9;
    out->prepare_seconds = cds.prepare_ns / 1e9;
}
