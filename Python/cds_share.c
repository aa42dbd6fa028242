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
#include "pycore_fileutils.h"     // _Py_EncodeLocaleRaw()
#include "pycore_initconfig.h"    // _PyStatus_ERR()
#include "pycore_pylifecycle.h"    // _Py_GetStdlibDir()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "cds_internal.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>                 // clock_gettime()

/* The archives in use, in lookup order: the application's (-X
   cds_archive) first, then the base, which is the installation's default
   archive of the standard library unless -X cds_base says otherwise.  Each
   is opened, used or found unusable on its own. */
enum { SLOT_APP = 0, SLOT_BASE = 1, NSLOTS = 2 };

typedef struct {
    const char *role;          /* "application" or "base" */
    char *path;                /* NULL: none given or found */
    int state;                 /* 1: mapped, -1: not used */
    _PyCDS_Archive ar;         /* the mapped archive and its modules */
    const char **mod_reason;   /* why a CDS_MOD_BAD entry is, for
                                  _cds.check() */
    const char *reason;        /* why the archive is not used */
    Py_ssize_t served, stale;
} cds_slot;

static struct {
    int started;               /* 0: not yet, 1: opened, -1: finalized */
    int base_pending;          /* the default archive is still to open */
    cds_slot slot[NSLOTS];
    int handler_installed;     /* the fault handler of -X cds_protect */
    Py_ssize_t served, stale, hashed, missed, rejected;
    Py_ssize_t missed_source;     /* of them, source modules (AUTO) */
    Py_ssize_t strings;           /* code of strings served (cds_exec.c) */
    int64_t open_ns, prepare_ns;   /* time spent opening, preparing */
} cds = {.slot = {{.role = "application"}, {.role = "base"}}};

uintptr_t _PyCDS_ReadOnlyStart[2] = {0, 0};
uintptr_t _PyCDS_ReadOnlyEnd[2] = {0, 0};

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
unusable(cds_slot *sl, const char *reason)
{
    sl->state = -1;
    sl->reason = reason;
    if (sl->path != NULL) {
        _PyCDS_Log(1, "%s%sarchive '%s' not used: %s",
                   sl == &cds.slot[SLOT_APP] ? "" : sl->role,
                   sl == &cds.slot[SLOT_APP] ? "" : " ", sl->path, reason);
    }
    return -1;
}

/* The installation's default archive: in the standard-library directory,
   so that every venv made from the installation finds it too, named for
   the interpreter's ABI (a debug build has its own). */
static char *
default_archive_path(void)
{
    const wchar_t *dir = _Py_GetStdlibDir();   /* sys._stdlib_dir */
    if (dir == NULL) {
        dir = _Py_GetConfig()->stdlib_dir;
    }
    if (dir == NULL || dir[0] == L'\0') {
        return NULL;
    }
    char *cdir = _Py_EncodeLocaleRaw(dir, NULL);
    if (cdir == NULL) {
        return NULL;
    }
    size_t n = strlen(cdir) + sizeof(CDS_DEFAULT_ARCHIVE) + 1;
    char *path = PyMem_RawMalloc(n);
    if (path != NULL) {
        snprintf(path, n, "%s/%s", cdir, CDS_DEFAULT_ARCHIVE);
    }
    PyMem_RawFree(cdir);
    return path;
}

static PyObject *serve(cds_slot *sl, Py_ssize_t i, const char *cname,
                       const char *cpath);
static int
open_slot(cds_slot *sl, const _PyCDS_Settings *settings, int index)
{
    if (sl->path == NULL) {
        return unusable(sl, "none given");
    }
    if (!CDS_SUPPORTED) {
        return unusable(sl, "not supported by this build");
    }
    _PyCDS_Archive *a = &sl->ar;
    /* Under PIE every object points into the moved interpreter image:
       copy mode (see _PyCDS_Archive); the mapping is then put anywhere,
       at an address a file cannot know */
    const _PyCDS_Image *image = _PyCDS_GetImage();
    a->copy = image->found && image->bias != 0 && !settings->in_place;
    const char *reason = _PyCDS_MapArchive(
        sl->path, settings->force_relocation || a->copy, &a->map);
    if (reason != NULL) {
        return unusable(sl, reason);
    }
    const cds_header *h = a->map.hdr;
    size_t nmod = h->module_count ? h->module_count : 1;
    a->mod_state = PyMem_RawCalloc(nmod, 1);
    size_t nbits = h->region_size[R_STR] / CDS_ALIGN / 8 + 1;
    a->str_ready = PyMem_RawCalloc(nbits, 1);
    a->str_valid = PyMem_RawCalloc(nbits, 1);
    if (a->copy) {
        a->mod_block = PyMem_RawCalloc(nmod, sizeof(char *));
        /* only what is used is read, and page by page: no read-around */
        (void)madvise(a->map.base, a->map.size, MADV_RANDOM);
    }
    if (a->mod_state == NULL || a->str_ready == NULL || a->str_valid == NULL
        || (a->copy && a->mod_block == NULL))
    {
        PyMem_RawFree(a->mod_state);
        PyMem_RawFree(a->str_ready);
        PyMem_RawFree(a->str_valid);
        PyMem_RawFree(a->mod_block);
        a->mod_block = NULL;
        a->mod_state = a->str_ready = a->str_valid = NULL;
        _PyCDS_UnmapArchive(&a->map);
        return unusable(sl, "out of memory");
    }
    sl->state = 1;
    if (!a->copy) {
        _PyCDS_ReadOnlyStart[index] = (uintptr_t)a->map.base
                                      + h->region_offset[R_COLD];
        _PyCDS_ReadOnlyEnd[index] = _PyCDS_ReadOnlyStart[index]
                                    + h->region_size[R_COLD];
    }
    a->verify = settings->verify;
    if (settings->protect) {
        a->protect = 1;
        _PyCDS_ProtectArchive(&a->map);
    }
    _PyCDS_Log(1, "%s%sarchive '%s' mapped at %p: %llu modules, %llu bytes%s",
               sl == &cds.slot[SLOT_APP] ? "" : sl->role,
               sl == &cds.slot[SLOT_APP] ? "" : " ", sl->path, a->map.base,
               (unsigned long long)a->map.modules,
               (unsigned long long)a->map.size,
               a->copy ? ", copied on use"
               : (a->map.archive_delta || a->map.image_delta)
               ? ", relocated on use" : "");
    return 0;
}

static int intern_seed(cds_slot *sl, PyInterpreterState *interp);
static Py_ssize_t find_entry(const _PyCDS_Archive *a, uint32_t kind,
                             const char *name, size_t len, const char *path);

/* The base archive: -X cds_base, none, or the default one (found later) */
static void
choose_base(const _PyCDS_Settings *settings)
{
    cds_slot *base = &cds.slot[SLOT_BASE];
    if (settings->base_path != NULL) {
        base->path = settings->base_path;
    }
    else if (settings->base_none) {
        base->state = -1;
        base->reason = "-X cds_base=none";
    }
    else {
        base->role = "default";
    }
    cds.base_pending = (base->state == 0);
}

static int
base_known(const _PyCDS_Settings *settings)
{
    return settings->base_path != NULL || _Py_GetStdlibDir() != NULL;
}

/* Map an archive and intern its start-up strings. */
static void
open_and_seed(int i)
{
    cds_slot *sl = &cds.slot[i];
    if (open_slot(sl, _PyCDS_GetSettings(), i) < 0) {
        return;
    }
    if (sl->ar.copy) {
        /* nothing to intern ahead: what copy mode uses is copied */
        const cds_header *h = sl->ar.map.hdr;
        if (_PyCDS_Checksum(0, sl->ar.map.base + h->region_offset[R_STR],
                            h->seed_size) != h->seed_checksum)
        {
            (void)unusable(sl, "start-up strings checksum mismatch "
                               "(corrupt archive)");
        }
        return;
    }
    /* on failure nothing more of the archive is used; the strings
       interned so far are valid, immortal objects */
    (void)intern_seed(sl, _PyInterpreterState_GET());
}

/* Open the archives on first use: 0 when one is usable.  The default
   archive is found from the standard-library directory, which is known
   once the path configuration is computed, after the core of the import
   system is up (only importlib._bootstrap is imported before): until then
   only the application archive is open. */
int
_PyCDS_ShareOpen(void)
{
    if (cds.started < 0) {
        return -1;
    }
    const _PyCDS_Settings *settings = _PyCDS_GetSettings();
    cds_slot *app = &cds.slot[SLOT_APP], *base = &cds.slot[SLOT_BASE];
    if (!cds.started) {
        cds.started = 1;
        app->path = settings->archive_path;
        open_and_seed(SLOT_APP);
        choose_base(settings);
        if (app->path == NULL && base->state < 0) {
            _PyCDS_Log(1, "share: no archive given (-X cds_archive=PATH or "
                       "PYTHONCDSARCHIVE)");
        }
    }
    if (cds.base_pending && base_known(settings)) {
        cds.base_pending = 0;
        if (base->path == NULL) {
            base->path = default_archive_path();
        }
        if (app->path != NULL && base->path != NULL
            && strcmp(app->path, base->path) == 0)
        {
            base->state = -1;     /* one file named twice: mapped once */
            base->reason = "the same file as the application archive";
        }
        else {
            open_and_seed(SLOT_BASE);
        }
        if (app->path == NULL && base->path == NULL) {
            _PyCDS_Log(1, "share: no archive given (-X cds_archive=PATH or "
                       "PYTHONCDSARCHIVE)");
        }
    }
    return (app->state > 0 || base->state > 0) ? 0 : -1;
}

/* DUMP: whether the base archive holds an entry for this module that
   share mode would serve for the file as it is now, so that an
   application archive need not hold it.  The base is mapped, not used. */
int
_PyCDS_BaseHolds(int kind, const char *name, const char *path)
{
    const _PyCDS_Settings *settings = _PyCDS_GetSettings();
    cds_slot *base = &cds.slot[SLOT_BASE];
    if (!cds.started) {
        cds.started = 1;
        choose_base(settings);
        if (cds.base_pending && base_known(settings)) {
            cds.base_pending = 0;
            if (base->path == NULL) {
                base->path = default_archive_path();
            }
            (void)open_slot(base, settings, SLOT_BASE);
        }
    }
    if (base->state <= 0) {
        return 0;
    }
    Py_ssize_t i = find_entry(&base->ar, (uint32_t)kind, name, strlen(name),
                              kind == KIND_SOURCE || kind == KIND_STRING
                              ? path : NULL);
    if (i < 0) {
        return 0;
    }
    int hashed;
    return kind != KIND_SOURCE
           || _PyCDS_SourceStale(&base->ar.map.index[i], path,
                                 settings->check_source, &hashed) == NULL;
}

/* Prepare index entry i of an archive once; whether it can be served. */
static int
module_ready(cds_slot *sl, size_t i)
{
    _PyCDS_Archive *a = &sl->ar;
    if (a->mod_state[i] == CDS_MOD_UNTOUCHED) {
        const cds_index_entry *e = &a->map.index[i];
        const char *name = a->map.strtab + e->name_off;
        int64_t t0 = now_ns();
        const char *reason = _PyCDS_PrepareModule(a, e, name);
        cds.prepare_ns += now_ns() - t0;
        if (reason != NULL && reason[0] != '\0') {
            _PyCDS_Log(1, "module %s: %s", name, reason);
        }
        if (reason != NULL && sl->mod_reason == NULL) {
            /* only for _cds.check(): allocated when a module fails */
            sl->mod_reason = PyMem_RawCalloc(a->map.hdr->module_count,
                                             sizeof(char *));
        }
        if (reason != NULL && sl->mod_reason != NULL) {
            sl->mod_reason[i] = reason[0] ? reason : "cannot be prepared";
        }
        a->mod_state[i] = reason == NULL ? CDS_MOD_READY : CDS_MOD_BAD;
    }
    return a->mod_state[i] == CDS_MOD_READY
           || a->mod_state[i] == CDS_MOD_SPENT;
}

/* Intern the seed: the start-up strings at the start of R_STR. */
static int
intern_seed(cds_slot *sl, PyInterpreterState *interp)
{
    _PyCDS_Archive *a = &sl->ar;
    const cds_header *h = a->map.hdr;
    uint64_t off = h->region_offset[R_STR];
    uint64_t end = off + h->seed_size;
    if (_PyCDS_Checksum(0, a->map.base + off, h->seed_size) != h->seed_checksum) {
        return unusable(sl, "start-up strings checksum mismatch "
                            "(corrupt archive)");
    }
    Py_ssize_t n = 0;
    while (off < end) {
        PyASCIIObject *s = _PyCDS_SharedString(a, off);
        if (s == NULL) {
            return unusable(sl, "bad start-up string (corrupt archive)");
        }
        size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                       : sizeof(PyCompactUnicodeObject);
        off += (header + ((uint64_t)s->length + 1) * s->state.kind + 15)
               & ~(uint64_t)15;
        _PyCDS_SetupSharedString(a, (PyObject *)s);
        PyObject *t = _PyUnicode_InternArchived(interp, (PyObject *)s);
        if (t != (PyObject *)s) {
            Py_DECREF(t);     /* interned earlier: fixups redirect to it */
        }
        n++;
    }
    _PyCDS_Log(2, "%zd start-up strings of the %s archive interned", n,
               sl->role);
    return 0;
}

/* -X cds_strict: an archive in effect that cannot be used stops start-up
   (exit status 1), so that an image build can prove its archive is used. */
static void
check_strict(void)
{
    static char msg[1200];
    for (int i = 0; i < NSLOTS; i++) {
        cds_slot *sl = &cds.slot[i];
        if (sl->state < 0 && sl->path != NULL) {
            snprintf(msg, sizeof(msg), "-X cds_strict: the %s archive '%s' "
                     "cannot be used: %s", sl->role, sl->path, sl->reason);
            Py_ExitStatusException(_PyStatus_ERR(msg));
        }
    }
    if (cds.slot[SLOT_APP].state <= 0 && cds.slot[SLOT_BASE].state <= 0) {
        snprintf(msg, sizeof(msg), "-X cds_strict: no archive to use (%s)",
                 cds.slot[SLOT_BASE].role[0] == 'd'
                 ? "the installation has no default archive"
                 : "-X cds_base=none and no -X cds_archive");
        Py_ExitStatusException(_PyStatus_ERR(msg));
    }
}

/* Main interpreter start-up: map the application archive and intern
   its start-up strings, before the runtime interns its own copies. */
void
_PyCDS_ShareInit(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp) || cds.started) {
        return;
    }
    int64_t t0 = now_ns();
    (void)_PyCDS_ShareOpen();
    cds.open_ns = now_ns() - t0;
}

/* Before site runs: the default archive is open by now; the fault handler
   of -X cds_protect, after -X faulthandler's; -X cds_strict. */
void
_PyCDS_ShareBeforeSite(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp)) {
        return;
    }
    int64_t t0 = now_ns();
    (void)_PyCDS_ShareOpen();
    cds.open_ns += now_ns() - t0;
    if ((cds.slot[0].ar.protect || cds.slot[1].ar.protect)
        && !cds.handler_installed)
    {
        _PyCDS_InstallFaultHandler();
        cds.handler_installed = 1;
    }
    if (_PyCDS_GetSettings()->strict) {
        check_strict();
    }
}

static int
compare_key(const _PyCDS_Map *m, const cds_index_entry *e, uint32_t kind,
            const char *name, size_t len)
{
    if (e->kind != kind) {
        return e->kind < kind ? -1 : 1;
    }
    const char *ename = m->strtab + e->name_off;
    int c = memcmp(ename, name, e->name_len < len ? e->name_len : len);
    if (c != 0) {
        return c;
    }
    return e->name_len < len ? -1 : (e->name_len > len ? 1 : 0);
}

/* The index entry of the archive with this (kind, name) and, for a source
   module, this path (NULL: any); -1 if none. */
static Py_ssize_t
find_entry(const _PyCDS_Archive *a, uint32_t kind, const char *name,
           size_t len, const char *path)
{
    const _PyCDS_Map *m = &a->map;
    size_t lo = 0, hi = m->hdr->module_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_key(m, &m->index[mid], kind, name, len) < 0) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    size_t plen = path ? strlen(path) : 0;
    for (size_t i = lo; i < m->hdr->module_count
         && compare_key(m, &m->index[i], kind, name, len) == 0; i++)
    {
        const cds_index_entry *e = &m->index[i];
        if (path == NULL || (e->path_len == plen
                             && memcmp(m->strtab + e->path_off, path, plen) == 0))
        {
            return (Py_ssize_t)i;
        }
    }
    return -1;
}

/* Whether an archive holds a usable entry for the source module 'name'
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
    for (int k = 0; k < NSLOTS && !found; k++) {
        if (cds.slot[k].state <= 0) {
            continue;
        }
        _PyCDS_Archive *a = &cds.slot[k].ar;
        Py_ssize_t i = find_entry(a, KIND_SOURCE, cname, (size_t)len, cpath);
        found = (i >= 0 && a->mod_state[i] != CDS_MOD_BAD);
    }
    Py_XDECREF(bpath);
    return found;
}

/* --- entries compiled as programs run: regular expressions (cds_regex.c)
   and strings (cds_exec.c) --------------------------------------------- */

/* Whether an archive in use holds entries of 'kind' (KIND_REGEX or
   KIND_STRING). */
int
_PyCDS_ArchiveHolds(uint32_t kind)
{
    if (!_Py_IsMainInterpreter(_PyInterpreterState_GET())
        || _PyCDS_ShareOpen() < 0)
    {
        return 0;
    }
    for (int k = 0; k < NSLOTS; k++) {
        const _PyCDS_Map *m = &cds.slot[k].ar.map;
        if (cds.slot[k].state <= 0) {
            continue;
        }
        uint64_t start = m->modules + (kind == KIND_STRING ? m->regexes : 0);
        uint64_t end = kind == KIND_REGEX ? start + m->regexes
                                          : m->hdr->module_count;
        if (start < end) {
            return 1;
        }
    }
    return 0;
}

PyObject *
_PyCDS_ArchiveString(const char *name, const char *text)
{
    PyObject *code = NULL;
    for (int k = 0; k < NSLOTS && code == NULL; k++) {
        cds_slot *sl = &cds.slot[k];
        Py_ssize_t i = sl->state > 0
            ? find_entry(&sl->ar, KIND_STRING, name, strlen(name), text) : -1;
        if (i >= 0) {
            code = serve(sl, i, name, NULL);
            if (code == NULL && PyErr_Occurred()) {
                break;
            }
        }
    }
    return code;
}

/* The first entry (kind, name) of the archives in use, the application
   archive first, that can be used: for a source ('path' its file), one
   that is current; otherwise one that is prepared, its code object in
   *code (borrowed: programs are never released).  NULL if none. */
const cds_index_entry *
_PyCDS_ArchiveEntry(uint32_t kind, const char *name, const char *path,
                    PyObject **code)
{
    for (int k = 0; k < NSLOTS; k++) {
        cds_slot *sl = &cds.slot[k];
        Py_ssize_t i = sl->state > 0
            ? find_entry(&sl->ar, kind, name, strlen(name), path) : -1;
        const cds_index_entry *e = i >= 0 ? &sl->ar.map.index[i] : NULL;
        int hashed;
        if (e != NULL && kind == KIND_SOURCE
            && _PyCDS_SourceStale(e, path, _PyCDS_GetSettings()->check_source,
                                  &hashed) == NULL)
        {
            return e;
        }
        if (e != NULL && kind != KIND_SOURCE && module_ready(sl, (size_t)i)) {
            _PyCDS_View view;
            _PyCDS_ModuleView(&sl->ar, (size_t)i, &view);
            *code = (PyObject *)_PyCDS_ViewAddr(&view, e->code);
            return e;
        }
    }
    return NULL;
}

/* The archived code object of an archive's entry, if it is current and
   can be prepared: a new reference; NULL, with an exception only for a
   memory error, if not. */
static PyObject *
serve(cds_slot *sl, Py_ssize_t i, const char *cname, const char *cpath)
{
    const cds_index_entry *e = &sl->ar.map.index[i];
    if (e->kind == KIND_SOURCE) {
        /* the source must be the file the entry was made from */
        int hashed;
        const char *why = _PyCDS_SourceStale(
            e, cpath, _PyCDS_GetSettings()->check_source, &hashed);
        cds.hashed += hashed;
        if (why != NULL) {
            cds.stale++;
            sl->stale++;
            _PyCDS_Log(1, "stale: %s (%s: %s)", cname, cpath, why);
            return NULL;
        }
    }
    if (sl->ar.mod_state[i] == CDS_MOD_SPENT) {
        /* imported before, and its run-once code objects released: copy
           the module again, as a normal import reads its .pyc again */
        sl->ar.mod_state[i] = CDS_MOD_UNTOUCHED;
        sl->ar.mod_block[i] = NULL;
    }
    if (!module_ready(sl, i)) {
        cds.rejected++;
        return NULL;
    }
    _PyCDS_View view;
    _PyCDS_ModuleView(&sl->ar, (size_t)i, &view);
    PyObject *code = _PyCDS_CopyModuleCode(
        (PyCodeObject *)_PyCDS_ViewAddr(&view, e->code));
    if (code == NULL) {
        return NULL;
    }
    _PyCDS_Log(2, "served: %s (%s archive)", cname, sl->role);
    if (e->kind == KIND_STRING) {
        /* a string may run again: its block stays */
        cds.strings++;
        return code;
    }
    cds.served++;
    sl->served++;
    /* the archived originals are used no more */
    (void)_PyCDS_ReleaseRunOnce(&sl->ar, (size_t)i);
    return code;
}

/* Say why a module was not served: not archived at all, or archived from
   another file (the source moved, or another copy is first on sys.path). */
static void
log_miss(uint32_t kind, const char *name, size_t len, const char *path)
{
    if (_PyCDS_GetSettings()->verbose < 2) {
        return;
    }
    for (int k = 0; k < NSLOTS && path != NULL; k++) {
        cds_slot *sl = &cds.slot[k];
        Py_ssize_t i = sl->state > 0
            ? find_entry(&sl->ar, kind, name, len, NULL) : -1;
        if (i >= 0) {
            const cds_index_entry *e = &sl->ar.map.index[i];
            _PyCDS_Log(2, "miss: %s (imported from %s; the %s archive holds "
                       "it from %.*s)", name, path, sl->role,
                       (int)e->path_len, sl->ar.map.strtab + e->path_off);
            return;
        }
    }
    _PyCDS_Log(2, "miss: %s (not in the archive)", name);
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
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (path != NULL && _PyCDS_EncodePath(path, &bpath, &cpath) < 0) {
        return NULL;
    }
    /* the application archive first; an entry stale or unusable there may
       still be current in the base */
    int listed = 0;
    PyObject *code = NULL;
    for (int k = 0; k < NSLOTS && code == NULL; k++) {
        cds_slot *sl = &cds.slot[k];
        Py_ssize_t i = sl->state > 0
            ? find_entry(&sl->ar, kind, cname, (size_t)len,
                         kind == KIND_SOURCE ? cpath : NULL)
            : -1;
        if (i >= 0) {
            listed = 1;
            code = serve(sl, i, cname, cpath);
            if (code == NULL && PyErr_Occurred()) {
                break;
            }
        }
    }
    if (!listed && !cds.base_pending) {
        /* (before the default archive opens, only importlib's bootstrap
           is imported, which no archive serves then) */
        cds.missed++;
        cds.missed_source += (kind == KIND_SOURCE);
        log_miss(kind, cname, (size_t)len, cpath);
    }
    Py_XDECREF(bpath);
    return code;
}

/* One entry of _PyCDS_ArchiveCheck(): (kind, name, path, problem). */
static PyObject *
check_entry(cds_slot *sl, size_t i, int check_source)
{
    const _PyCDS_Map *m = &sl->ar.map;
    const cds_index_entry *e = &m->index[i];
    const char *problem = NULL;
    char buf[200];
    if (!module_ready(sl, i)) {
        problem = sl->mod_reason && sl->mod_reason[i]
                  ? sl->mod_reason[i] : "cannot be prepared";
    }
    else if (e->kind == KIND_SOURCE) {
        /* the path as the entry holds it: NUL-terminated copy */
        PyObject *path = PyBytes_FromStringAndSize(
            m->strtab + e->path_off, (Py_ssize_t)e->path_len);
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
        "(sNNz)", e->kind == KIND_SOURCE ? "source"
                  : e->kind == KIND_FROZEN ? "frozen"
                  : e->kind == KIND_REGEX ? "regex" : "string",
        PyUnicode_DecodeUTF8(m->strtab + e->name_off,
                             (Py_ssize_t)e->name_len, "surrogateescape"),
        e->kind == KIND_SOURCE
        ? PyUnicode_DecodeFSDefaultAndSize(m->strtab + e->path_off,
                                           (Py_ssize_t)e->path_len)
        : Py_NewRef(Py_None),
        problem);
}

/* Prepare every module of the archives in use (verify, relocate, fix up)
   and check every source entry against its file now: a list of (kind,
   name, path, problem), problem None when the entry can be served.  None
   when no archive is in use (see _PyCDS_GetShareStats() for why). */
PyObject *
_PyCDS_ArchiveCheck(int check_source)
{
    PyInterpreterState *interp = _PyInterpreterState_GET();
    if (!_Py_IsMainInterpreter(interp) || _PyCDS_ShareOpen() < 0) {
        Py_RETURN_NONE;
    }
    PyObject *list = PyList_New(0);
    for (int k = 0; k < NSLOTS; k++) {
        cds_slot *sl = &cds.slot[k];
        size_t n = sl->state > 0 ? sl->ar.map.hdr->module_count : 0;
        for (size_t i = 0; list != NULL && i < n; i++) {
            PyObject *item = check_entry(sl, i, check_source);
            if (item == NULL || PyList_Append(list, item) < 0) {
                Py_CLEAR(list);
            }
            Py_XDECREF(item);
        }
    }
    return list;
}

/* Called when the runtime finalizes.  The mappings stay (objects that
   were never freed may still point into them), but a runtime initialized
   again in this process (embedding) imports normally: the interned strings
   the archives' fixups resolved to belonged to the finalized runtime. */
void
_PyCDS_ShareFini(void)
{
    for (int i = 0; i < NSLOTS; i++) {
        cds_slot *sl = &cds.slot[i];
        if (sl->state > 0) {
            sl->state = -1;
            sl->reason = "the runtime that mapped the archive was finalized";
        }
    }
    if (!cds.started) {
        cds.slot[SLOT_APP].reason = cds.slot[SLOT_BASE].reason
            = "not used before the runtime was finalized";
    }
    cds.started = -1;
}

int
_PyCDS_IsArchivedObject(PyObject *op)
{
    for (int i = 0; i < NSLOTS; i++) {
        const _PyCDS_Archive *a = &cds.slot[i].ar;
        if (a->map.base != NULL && (char *)op >= a->map.base
            && (char *)op < a->map.base + a->map.size)
        {
            return 1;
        }
        /* copy mode: the modules' copies (only _cds.is_archived() asks) */
        for (size_t k = 0; a->mod_block != NULL
                           && k < a->map.hdr->module_count; k++) {
            if (a->mod_block[k] != NULL) {
                _PyCDS_View v;
                int r;
                _PyCDS_ModuleView(a, k, &v);
                if (_PyCDS_ViewOffset(&v, op, &r) != UINT64_MAX) {
                    return 1;
                }
            }
        }
    }
    return 0;
}

void
_PyCDS_GetShareStats(_PyCDS_ShareStats *out)
{
    memset(out, 0, sizeof(*out));
    out->active = cds.slot[0].state > 0 || cds.slot[1].state > 0;
    out->at_preferred_address = out->active;
    for (int i = 0; i < NSLOTS; i++) {
        cds_slot *sl = &cds.slot[i];
        _PyCDS_ArchiveStats *as = &out->archive[i];
        as->role = sl->role;
        as->path = sl->path;
        as->active = sl->state > 0;
        as->reason = sl->reason;
        as->modules = as->active ? (Py_ssize_t)sl->ar.map.modules : 0;
        as->served = sl->served;
        as->stale = sl->stale;
        out->modules += as->modules;
        out->prepared += sl->ar.prepared;
        out->relocated += sl->ar.relocated;
        out->released += sl->ar.released;
        out->protected |= sl->ar.protect;
        if (as->active && sl->ar.map.archive_delta != 0) {
            out->at_preferred_address = 0;
        }
    }
    /* why nothing is used: the application's reason if one was given */
    out->reason = cds.slot[SLOT_APP].path != NULL || cds.slot[SLOT_BASE].reason == NULL
                  ? cds.slot[SLOT_APP].reason : cds.slot[SLOT_BASE].reason;
    if (out->active) {
        out->reason = NULL;
    }
    out->served = cds.served;
    out->strings = cds.strings;
    out->stale = cds.stale;
    out->hashed = cds.hashed;
    out->missed = cds.missed;
    out->missed_source = cds.missed_source;
    out->rejected = cds.rejected;
    out->open_seconds = cds.open_ns / 1e9;
    out->prepare_seconds = cds.prepare_ns / 1e9;
}
