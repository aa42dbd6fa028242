/* pycds: DUMP -- write the archive of the modules a module list names.
 *
 * For each "source" entry the module is found again the way a normal
 * import would find it now (PathFinder on sys.path), and also taken from
 * the listed path if that is another file; its code object comes from
 * SourceFileLoader.get_code(), as a normal import gets it (from the .pyc
 * when current).  "frozen" entries take the interpreter's frozen code.
 * The builder (cds_builder.c) lays the objects out and the file map
 * (cds_filemap.c) writes the file.
 *
 * Start-up interns a few thousand strings (builtins' names, methods of the
 * built-in types, names of the modules every start-up runs) before any
 * module is imported.  An archived identifier equal to one of them could
 * not become the canonical string, and every tuple and code object
 * referencing it would be written when its module is prepared.  So DUMP
 * notes the strings start-up has interned, the builder puts those the
 * archive uses first in R_STR (the "seed"), and SHARE interns them as soon
 * as the interpreter can intern, before the runtime interns its own copies.
 *
 * Errors: a module that cannot be archived is skipped with a message
 * under -X cds_verbose; anything else ends the dump with a message on
 * stderr and exit status 1.  Internally, -1 with a Python exception.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_global_objects.h" // _Py_INTERP_CACHED_OBJECT()
#include "pycore_pystate.h"       // _Py_IsMainInterpreter()
#include "cds_internal.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>               // access()

static PyObject *startup_strings;    /* DUMP: sorted list of str */
static int dump_in_base;             /* entries left to the base archive */

void
_PyCDS_NoteStartupStrings(PyInterpreterState *interp)
{
    if (!_Py_IsMainInterpreter(interp) || startup_strings != NULL) {
        return;
    }
    PyObject *interned = _Py_INTERP_CACHED_OBJECT(interp, interned_strings);
    PyObject *keys = interned ? PyDict_Keys(interned) : NULL;
    if (keys == NULL || PyList_Sort(keys) < 0) {
        Py_XDECREF(keys);
        PyErr_Clear();
        return;
    }
    startup_strings = keys;
}

/* --- finding modules the way a normal import would -------------------- */

/* Return the source path PathFinder finds for 'name' on sys.path (new
   reference), or NULL with *reason set and no exception. */
static PyObject *
find_source(PyObject *machinery, PyObject *name, const char **reason)
{
    PyObject *dot = PyUnicode_FromStringAndSize(".", 1);
    PyObject *parts = dot ? PyUnicode_Split(name, dot, -1) : NULL;
    PyObject *finder = PyObject_GetAttrString(machinery, "PathFinder");
    PyObject *loader_type = PyObject_GetAttrString(machinery, "SourceFileLoader");
    PyObject *search = Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (parts == NULL || finder == NULL || loader_type == NULL) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(parts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *slice = PyList_GetSlice(parts, 0, i + 1);
        PyObject *fullname = slice ? PyUnicode_Join(dot, slice) : NULL;
        Py_XDECREF(slice);
        if (fullname == NULL) {
            goto done;
        }
        PyObject *spec = PyObject_CallMethod(finder, "find_spec", "OO",
                                             fullname, search);
        Py_DECREF(fullname);
        if (spec == NULL) {
            goto done;
        }
        if (spec == Py_None) {
            Py_DECREF(spec);
            *reason = "not found on sys.path";
            goto done;
        }
        if (i < n - 1) {
            Py_SETREF(search, PyObject_GetAttrString(spec, "submodule_search_locations"));
            Py_DECREF(spec);
            if (search == NULL) {
                goto done;
            }
            if (search == Py_None) {
                *reason = "a parent is not a package";
                goto done;
            }
            continue;
        }
        PyObject *loader = PyObject_GetAttrString(spec, "loader");
        if (loader == NULL) {
            Py_DECREF(spec);
            goto done;
        }
        if (loader == Py_None) {
            *reason = "namespace package";
        }
        else if ((PyObject *)Py_TYPE(loader) != loader_type) {
            *reason = "not a source module (extension, bytecode-only or other loader)";
        }
        else {
            result = PyObject_GetAttrString(spec, "origin");
        }
        Py_DECREF(loader);
        Py_DECREF(spec);
    }
done:
    if (PyErr_Occurred()) {
        *reason = "error while searching";
        PyErr_Clear();
        Py_CLEAR(result);
    }
    Py_XDECREF(dot);
    Py_XDECREF(parts);
    Py_XDECREF(finder);
    Py_XDECREF(loader_type);
    Py_XDECREF(search);
    return result;
}

static void
log_skip(PyObject *name, const char *reason)
{
    _PyCDS_Log(1, "dump: skipped %s: %s", PyUnicode_AsUTF8(name), reason);
}

static void
log_skip_exc(PyObject *name)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *msg = exc ? PyObject_Str(exc) : NULL;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    if (text == NULL) {
        PyErr_Clear();
    }
    _PyCDS_Log(1, "dump: skipped %s: %s: %s", PyUnicode_AsUTF8(name),
               exc ? Py_TYPE(exc)->tp_name : "error", text ? text : "?");
    Py_XDECREF(msg);
    Py_XDECREF(exc);
}

/* The path an entry records for the source file 'bpath' (bytes): without
   the -X cds_dump_strip prefix (a staging directory), as the installed
   interpreter will find the file.  New reference. */
static PyObject *
recorded_path(PyObject *bpath)
{
    const char *strip = _PyCDS_GetSettings()->dump_strip;
    const char *p = PyBytes_AS_STRING(bpath);
    size_t n = strip ? strlen(strip) : 0;
    while (n > 1 && strip[n - 1] == '/') {
        n--;
    }
    if (n > 1 && strncmp(p, strip, n) == 0 && p[n] == '/') {
        return PyBytes_FromString(p + n);
    }
    return Py_NewRef(bpath);
}

static int
dump_source(_PyCDS_Builder *w, PyObject *machinery, PyObject *name, PyObject *path,
            int *archived, int *skipped)
{
    PyObject *file = PyUnicode_EncodeFSDefault(path);
    PyObject *bpath = file ? recorded_path(file) : NULL;
    if (bpath == NULL) {
        Py_XDECREF(file);
        return -1;
    }
    int err = 0;
    PyObject *code = NULL;
    const char *problem = NULL;
    struct stat st;
    /* already archived (found by the search and also listed)? */
    if (_PyCDS_BuilderHasSource(w, name, bpath)) {
        goto done;
    }
    /* an application archive leaves out what the base archive serves */
    if (_PyCDS_BaseHolds(KIND_SOURCE, PyUnicode_AsUTF8(name),
                         PyBytes_AS_STRING(bpath)))
    {
        _PyCDS_Log(2, "dump: %s: served by the base archive",
                   PyUnicode_AsUTF8(name));
        dump_in_base++;
        goto done;
    }
    if (stat(PyBytes_AS_STRING(file), &st) != 0) {
        problem = "source file not found";
    }
    else if (!S_ISREG(st.st_mode)) {
        problem = "the source is not a regular file";
    }
    if (problem != NULL) {
        log_skip(name, problem);
        (*skipped)++;
        goto done;
    }
    PyObject *loader = PyObject_CallMethod(machinery, "SourceFileLoader",
                                           "OO", name, path);
    code = loader ? PyObject_CallMethod(loader, "get_code", "O", name) : NULL;
    Py_XDECREF(loader);
    /* after get_code(), which may have written the .pyc */
    _PyCDS_SourceStamp stamp;
    if (code != NULL
        && _PyCDS_SourceStampOf(PyBytes_AS_STRING(file), &st, &stamp) < 0)
    {
        Py_SETREF(code, Py_NewRef(Py_None));
        problem = "cannot read the source, or it changed during the dump";
    }
    if (code == NULL || !PyCode_Check(code)) {
        if (code == NULL) {
            log_skip_exc(name);
        }
        else {
            log_skip(name, problem ? problem : "no code object");
        }
        (*skipped)++;
        goto done;
    }
    if (bpath != file) {
        /* the file names of the code, as an import at the recorded path
           gives them (importlib's _fix_co_filename()) */
        PyObject *imp = PyImport_ImportModule("_imp");
        PyObject *rec = PyUnicode_DecodeFSDefaultAndSize(
            PyBytes_AS_STRING(bpath), PyBytes_GET_SIZE(bpath));
        PyObject *res = (imp && rec)
            ? PyObject_CallMethod(imp, "_fix_co_filename", "OO", code, rec)
            : NULL;
        Py_XDECREF(imp);
        Py_XDECREF(rec);
        if (res == NULL) {
            err = -1;
            goto done;
        }
        Py_DECREF(res);
    }
    if (_PyCDS_BuilderAddModule(w, KIND_SOURCE, name, bpath, &stamp, code) < 0) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            err = -1;
            goto done;
        }
        log_skip_exc(name);
        (*skipped)++;
    }
    else {
        (*archived)++;
        _PyCDS_Log(2, "dump: archived %s from %s", PyUnicode_AsUTF8(name),
                   PyBytes_AS_STRING(bpath));
    }
done:
    Py_XDECREF(code);
    Py_DECREF(bpath);
    Py_DECREF(file);
    return err;
}

static int
dump_frozen(_PyCDS_Builder *w, PyObject *imp, PyObject *name, int *archived,
            int *skipped)
{
    PyObject *res = PyObject_CallMethod(imp, "is_frozen", "O", name);
    if (res == NULL) {
        log_skip_exc(name);
        (*skipped)++;
        return 0;
    }
    int frozen = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (frozen <= 0) {
        PyErr_Clear();
        log_skip(name, "not a frozen module of this interpreter");
        (*skipped)++;
        return 0;
    }
    if (_PyCDS_BaseHolds(KIND_FROZEN, PyUnicode_AsUTF8(name), NULL)) {
        dump_in_base++;
        return 0;
    }
    PyObject *code = PyObject_CallMethod(imp, "get_frozen_object", "O", name);
    if (code == NULL || !PyCode_Check(code)) {
        if (code == NULL) {
            log_skip_exc(name);
        }
        Py_XDECREF(code);
        (*skipped)++;
        return 0;
    }
    if (_PyCDS_BuilderAddModule(w, KIND_FROZEN, name, NULL, NULL, code) < 0) {
        Py_DECREF(code);
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            return -1;
        }
        log_skip_exc(name);
        (*skipped)++;
        return 0;
    }
    (*archived)++;
    Py_DECREF(code);
    return 0;
}


/* Whether 'path' can be the source file of module 'name', as the path
   finder names them: ".../TAIL.py" or ".../TAIL/__init__.py", TAIL the
   last part of the name.  A list names other files only if garbled or
   forged, and those are not compiled. */
static int
source_path_fits(const char *name, const char *path)
{
    const char *tail = strrchr(name, '.');
    tail = tail ? tail + 1 : name;
    size_t tlen = strlen(tail);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, tail, tlen) == 0 && strcmp(base + tlen, ".py") == 0) {
        return 1;
    }
    if (strcmp(base, "__init__.py") != 0 || base - path < (ptrdiff_t)tlen + 2) {
        return 0;
    }
    const char *dir = base - 1 - tlen;      /* ".../TAIL/__init__.py" */
    return dir[-1] == '/' && strncmp(dir, tail, tlen) == 0;
}

/* One list entry: the file a normal import finds now, and the file the
   traced run imported, if that is another one. */
static int
dump_entry(_PyCDS_Builder *w, PyObject *machinery, PyObject *imp,
           const _PyCDS_ListEntry *e, int *archived, int *skipped)
{
    PyObject *name = PyUnicode_FromString(e->name);
    if (name == NULL) {
        return -1;
    }
    int err = 0;
    if (strcmp(e->kind, "frozen") == 0) {
        err = dump_frozen(w, imp, name, archived, skipped);
        Py_DECREF(name);
        return err;
    }
    const char *reason = NULL;
    PyObject *found = find_source(machinery, name, &reason);
    if (found != NULL) {
        err = dump_source(w, machinery, name, found, archived, skipped);
    }
    PyObject *listed = PyUnicode_DecodeFSDefault(e->path);
    if (listed == NULL) {
        err = -1;
    }
    else if (found != NULL && PyUnicode_Compare(found, listed) == 0) {
        /* the same file: done */
    }
    else if (err == 0) {
        if (!source_path_fits(e->name, e->path)) {
            log_skip(name, "the listed path is not a source file of the "
                           "module");
            (*skipped)++;
        }
        else if (access(e->path, F_OK) == 0) {
            err = dump_source(w, machinery, name, listed, archived, skipped);
        }
        else if (found == NULL) {
            log_skip(name, reason ? reason : "not found");
            (*skipped)++;
        }
    }
    Py_XDECREF(listed);
    Py_XDECREF(found);
    Py_DECREF(name);
    return err;
}

/* Before the entries a program compiles as it runs: a warning raises. */
static int
warnings_as_errors(void)
{
    PyObject *warnings = PyImport_ImportModule("warnings");
    PyObject *res = warnings
        ? PyObject_CallMethod(warnings, "simplefilter", "s", "error") : NULL;
    Py_XDECREF(warnings);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* "; N WHAT archived, N in the base archive, N left to WHO" */
static void
derived_note(char *buf, size_t size, const _PyCDS_DumpCounts *c,
             const char *what, const char *who)
{
    size_t len = strlen(buf);
    if (c->archived + c->in_base + c->skipped > 0 && len < size) {
        snprintf(buf + len, size - len, "; %d %s archived, %d in the base "
                 "archive, %d left to %s", c->archived, what, c->in_base,
                 c->skipped, who);
    }
}

/* Lay out and write the archive; -1 with errno set. */
static int
write_archive(_PyCDS_Builder *w, const char *path, uint64_t *size)
{
    _PyCDS_Layout lay;
    if (_PyCDS_BuilderLayout(w, &lay) < 0) {
        PyErr_Clear();
        errno = ENOMEM;
        return -1;
    }
    int err = _PyCDS_WriteArchiveFile(path, &lay);
    *size = lay.header.file_size;
    int saved = errno;
    _PyCDS_LayoutClear(&lay);
    errno = saved;
    return err;
}

int
_PyCDS_Dump(const _PyCDS_Settings *s)
{
    if (!CDS_SUPPORTED) {
        fprintf(stderr, "cds: dump: code-object archives are not supported "
                        "by this build\n");
        return 1;
    }
    PyTime_t t0 = 0, t1 = 0;
    (void)PyTime_PerfCounterRaw(&t0);

    struct stat st;
    if (stat(s->list_path, &st) != 0) {
        fprintf(stderr, "cds: dump: cannot read module list '%s': %s\n",
                s->list_path, strerror(errno));
        return 1;
    }
    _PyCDS_List list = {NULL, 0, 0};
    char errbuf[512];
    if (_PyCDS_ListRead(s->list_path, &list, errbuf, sizeof(errbuf)) < 0) {
        fprintf(stderr, "cds: dump: %s\n", errbuf);
        _PyCDS_ListClear(&list);
        return 1;
    }

    int status = 1;
    int archived = 0, skipped = 0;
    PyObject *machinery = PyImport_ImportModule("importlib.machinery");
    PyObject *imp = PyImport_ImportModule("_imp");
    _PyCDS_Builder *w = (machinery && imp) ? _PyCDS_BuilderNew(startup_strings)
                                           : NULL;
    if (w == NULL) {
        PyErr_Print();
        goto done;
    }
    /* Listed frozen modules are archived even if this process runs with
       -X frozen_modules=off (the default of a debug build): their code is
       part of the binary whatever the setting. */
    PyObject *res = PyObject_CallMethod(imp, "_override_frozen_modules_for_tests",
                                        "i", 1);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);

    for (Py_ssize_t i = 0; i < list.len; i++) {
        const char *kind = list.items[i].kind;
        if ((strcmp(kind, "source") == 0 || strcmp(kind, "frozen") == 0)
            && dump_entry(w, machinery, imp, &list.items[i],
                          &archived, &skipped) < 0)
        {
            PyErr_Print();
            goto done;
        }
    }
    /* then what programs compile as they run: the programs of regular
       expressions (cds_regex.c) and the code of strings (cds_exec.c),
       with warnings made errors, so that what warns is left to the
       program, which warns */
    _PyCDS_DumpCounts regexes = {0}, strings = {0};
    if (warnings_as_errors() < 0) {
        PyErr_Print();
        goto done;
    }
    for (Py_ssize_t i = 0; i < list.len; i++) {
        const _PyCDS_ListEntry *e = &list.items[i];
        int err = strcmp(e->kind, "regex") == 0
                  ? _PyCDS_DumpRegex(w, e->path, &regexes)
                  : strcmp(e->kind, "string") == 0
                  ? _PyCDS_DumpString(w, e->path, &strings) : 0;
        if (err < 0) {
            PyErr_Print();
            goto done;
        }
    }

    uint64_t size = 0;
    if (write_archive(w, s->archive_path, &size) < 0) {
        fprintf(stderr, "cds: dump: cannot write archive '%s': %s\n",
                s->archive_path, strerror(errno));
        goto done;
    }
    (void)PyTime_PerfCounterRaw(&t1);
    double secs = PyTime_AsSecondsDouble(t1 - t0);
    char base_note[64] = "";
    if (dump_in_base) {
        snprintf(base_note, sizeof(base_note), ", %d in the base archive",
                 dump_in_base);
    }
    char notes[240] = "";
    derived_note(notes, sizeof(notes), &regexes, "regular expressions",
                 "re");
    derived_note(notes, sizeof(notes), &strings, "strings", "compile()");
    fprintf(stderr, "cds: dump: %d modules archived%s, %d skipped%s; "
            "%zd objects, %llu bytes, %.2f s -> %s\n",
            archived, base_note, skipped, notes, _PyCDS_BuilderObjects(w),
            (unsigned long long)size, secs, s->archive_path);
    status = 0;

done:
    Py_XDECREF(machinery);
    Py_XDECREF(imp);
    _PyCDS_BuilderFree(w);
    _PyCDS_ListClear(&list);
    return status;
}
