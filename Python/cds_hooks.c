/* pycds: the interpreter's entry points into the archive code.
 *
 * Every call from upstream CPython arrives here (but the configuration,
 * cds_config.c) and is dispatched by mode: start-up (map the archive,
 * before site), exit (the TRACE list, the SHARE stats), the -X cds=dump
 * run, the frozen-module hook of Python/import.c, the _imp functions
 * importlib calls, and the _cds module.
 *
 *   importlib._bootstrap._find_spec() calls _imp._cds_find_spec(name,
 *   path) first: the C search of archived modules (cds_finder.c).
 *
 *   importlib._bootstrap_external.SourceLoader.get_code() calls
 *   _imp._cds_find_code(fullname, source_path) once the finders have
 *   located the module's source file.  TRACE records the module; SHARE
 *   returns the archived code object when the archive holds a current
 *   entry for that exact path, and None otherwise, in which case the
 *   normal .pyc path runs.
 *
 *   re._compiler.compile() calls _imp._cds_regex(pattern, flags) before it
 *   compiles a pattern: the archived program, if any (cds_regex.c).
 *
 *   PyRun_StringFlags() (exec() and eval() of a string) calls
 *   _PyCDS_StringCodeHook() before it compiles the text (cds_exec.c).
 *
 * Errors: the lifecycle hooks never fail; the _imp and _cds functions
 * raise exceptions as Python functions do (only for bad arguments or
 * memory errors: an unusable archive is not an error).
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_pystate.h"       // _Py_GetConfig()
#include "cds_internal.h"

#include <fcntl.h>
#include <unistd.h>

/*[clinic input]
module _imp
module _cds
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=e0274694c6e7fe90]*/

#include "clinic/cds_hooks.c.h"

/* --- lifecycle ----------------------------------------------------------- */

void
_PyCDS_InitInterp(PyInterpreterState *interp)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode == _PyCDS_SHARE) {
        if (s->auto_refresh && _Py_IsMainInterpreter(interp)) {
            _PyCDS_AutoStart();
        }
        _PyCDS_ShareInit(interp);
    }
}

void
_PyCDS_BeforeSite(PyInterpreterState *interp)
{
    switch (_PyCDS_GetSettings()->mode) {
        case _PyCDS_SHARE:
            _PyCDS_ShareBeforeSite(interp);
            break;
        case _PyCDS_DUMP:
            _PyCDS_NoteStartupStrings(interp);
            break;
        default:
            break;
    }
}

/* PYTHONCDSSTATS=FILE: at exit, append one line of this process's
   share-mode counters to FILE, so that whoever started the processes (a
   test harness, an image build) can tell that they were served. */
static void
write_stats(const char *path)
{
    _PyCDS_ShareStats st;
    _PyCDS_GetShareStats(&st);
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "pid=%ld active=%d served=%zd stale=%zd hashed=%zd "
                     "missed=%zd rejected=%zd protected=%d specs_found=%zd\n",
                     (long)getpid(), st.active, st.served, st.stale,
                     st.hashed, st.missed, st.rejected, st.protected,
                     _PyCDS_SpecsFound);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW
                        | O_NONBLOCK, 0644);
    if (fd >= 0) {
        /* one write() of less than PIPE_BUF bytes: lines never interleave */
        (void)!write(fd, line, (size_t)n);
        close(fd);
    }
}

/* -X cds_verbose: one line at exit, whether the archives helped. */
static void
log_summary(void)
{
    if (_PyCDS_GetSettings()->verbose < 1) {
        return;
    }
    _PyCDS_ShareStats st;
    _PyCDS_GetShareStats(&st);
    char per[160] = "";
    size_t n = 0;
    for (int i = 0; i < 2; i++) {
        const _PyCDS_ArchiveStats *as = &st.archive[i];
        if (as->active && n < sizeof(per)) {
            n += (size_t)snprintf(per + n, sizeof(per) - n, "%s%zd from the "
                                  "%s archive", n ? ", " : " (", as->served,
                                  as->role);
        }
    }
    if (n > 0 && n < sizeof(per) - 1) {
        strcat(per, ")");
    }
    _PyCDS_Log(1, "exit: %zd modules served%s, %zd stale, %zd not in the "
               "archive, %zd refused", st.served, per, st.stale, st.missed,
               st.rejected);
}

void
_PyCDS_Fini(void)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode == _PyCDS_TRACE) {
        _PyCDS_TraceFini(s->list_path);
    }
    if (s->mode == _PyCDS_SHARE) {
        if (s->stats_path != NULL) {
            write_stats(s->stats_path);
        }
        log_summary();
        if (s->auto_refresh) {
            _PyCDS_AutoFini(s);
        }
        _PyCDS_ShareFini();
    }
}

int
_PyCDS_RunDump(void)
{
    return _PyCDS_Dump(_PyCDS_GetSettings());
}

PyObject *
_PyCDS_FindFrozenCode(PyObject *name)
{
    switch (_PyCDS_GetSettings()->mode) {
        case _PyCDS_TRACE:
            _PyCDS_TraceModule("frozen", name, NULL);
            return NULL;
        case _PyCDS_SHARE:
            if (_PyCDS_GetSettings()->auto_refresh) {
                _PyCDS_TraceModule("frozen", name, NULL);
            }
            return _PyCDS_ArchiveLookup("frozen", name, NULL);
        default:
            return NULL;
    }
}

/* Whether this process records what it compiles: TRACE, and SHARE that
   keeps its archive up to date (-X cds=auto). */
static int
recording(const _PyCDS_Settings *s)
{
    return s->mode == _PyCDS_TRACE
           || (s->mode == _PyCDS_SHARE && s->auto_refresh);
}

PyObject *
_PyCDS_StringCodeHook(const char *text, int start, PyCompilerFlags *flags)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (recording(s)) {
        _PyCDS_TraceString(text, start, flags);
    }
    if (s->mode != _PyCDS_SHARE
        || !_Py_IsMainInterpreter(_PyInterpreterState_GET()))
    {
        return NULL;
    }
    return _PyCDS_StringCode(text, start, flags);
}

/* --- _imp functions ------------------------------------------------------ */

/*[clinic input]
_imp._cds_find_code

    name: object
    path: object
    /

The archived code object of a source module, or None.

Called by importlib's SourceLoader.get_code() for the source file 'path'
the finders located.  With -X cds=share, return the code object of the
archive entry made from exactly that file (same path, size and mtime), or
None for the normal .pyc path.  With -X cds=trace, record the module and
return None.  Otherwise return None.
[clinic start generated code]*/

static PyObject *
_imp__cds_find_code_impl(PyObject *module, PyObject *name, PyObject *path)
/*[clinic end generated code: output=6fb36ca6b750cd09 input=0be0fc2cb3e58ad6]*/
{
    if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(path)) {
        /* e.g. a loader made with a path-like object: the normal path */
        Py_RETURN_NONE;
    }
    switch (_PyCDS_GetSettings()->mode) {
        case _PyCDS_TRACE:
            _PyCDS_TraceModule("source", name, path);
            break;
        case _PyCDS_SHARE: {
            if (_PyCDS_GetSettings()->auto_refresh) {
                _PyCDS_TraceModule("source", name, path);
            }
            PyObject *code = _PyCDS_ArchiveLookup("source", name, path);
            if (code != NULL) {
                return code;
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
            break;
        }
        default:
            break;
    }
    Py_RETURN_NONE;
}

/*[clinic input]
_imp._cds_find_spec

    name: object
    path: object
    /

The spec the normal search finds for an archived module, or None.

Called first by importlib._bootstrap._find_spec(), with the same
arguments.  With -X cds=share and a module the archive holds, make the
search of the default finders in C and return the spec when it proves
that the search finds the archived source file; otherwise return None and
the Python search runs.
[clinic start generated code]*/

static PyObject *
_imp__cds_find_spec_impl(PyObject *module, PyObject *name, PyObject *path)
/*[clinic end generated code: output=3793a8f55d78770a input=4a4d3747e10eb6d6]*/
{
    if (_PyCDS_GetSettings()->mode != _PyCDS_SHARE) {
        Py_RETURN_NONE;
    }
    return _PyCDS_FindSpec(module, name, path);
}

/*[clinic input]
_imp._cds_regex

    pattern: object
    flags: object
    /

The program of a regular expression the archive holds, or None.

Called by re._compiler.compile() for a pattern it is to compile.  With
-X cds=share, return the arguments after the pattern that _sre.compile()
takes for it -- (flags, code, groups, groupindex, indexgroup) -- when an
archive holds its program, made by the re package this process runs.  With
-X cds=trace, record the pattern and return None.  Otherwise return None.
[clinic start generated code]*/

static PyObject *
_imp__cds_regex_impl(PyObject *module, PyObject *pattern, PyObject *flags)
/*[clinic end generated code: output=144513aa8a1d8393 input=fb380995f7188764]*/
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (recording(s)) {
        _PyCDS_TraceRegex(pattern, flags);
    }
    if (s->mode == _PyCDS_SHARE) {
        PyObject *program = _PyCDS_RegexProgram(pattern, flags);
        if (program != NULL) {
            return program;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef imp_cds_methods[] = {
    _IMP__CDS_FIND_CODE_METHODDEF
    _IMP__CDS_REGEX_METHODDEF
    _IMP__CDS_FIND_SPEC_METHODDEF
    {NULL, NULL}
};

int
_PyCDS_AddImpFunctions(PyObject *imp_module)
{
    return PyModule_AddFunctions(imp_module, imp_cds_methods);
}

/* --- the _cds module ----------------------------------------------------- */

/* A path of the settings as str (None if not set). */
static PyObject *
fs_path(const char *path)
{
    return path ? PyUnicode_DecodeFSDefault(path) : Py_NewRef(Py_None);
}

/*[clinic input]
_cds.info

Return a dict describing the code-object archive settings and state.

Keys: mode and mode_source, list, archive, verbose, strict; active (an
archive is mapped) and reason (why not); archives, a list of dicts
(role, path, active, reason, modules, served, stale) for the application
archive and the base archive (role "default" for the installation's
default archive); modules in the archives; the counters
served, specs_found, stale, hashed (source hashes checked), missed,
rejected, prepared, relocated, released, regexes (programs of
regular expressions served) and strings (code of strings exec() and
eval() ran, served);
mapped_at_preferred_address, protected; open_seconds and
prepare_seconds (time spent opening and preparing the archive);
format_version and fingerprint (in hexadecimal), what an archive must
have for this interpreter to use it.
[clinic start generated code]*/

static PyObject *
_cds_info_impl(PyObject *module)
/*[clinic end generated code: output=544bbbea22d7fa1d input=5dec546f338a9263]*/
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode == _PyCDS_SHARE
        && _Py_IsMainInterpreter(_PyInterpreterState_GET()))
    {
        (void)_PyCDS_ShareOpen();   /* report on the archive even before use */
    }
    _PyCDS_ShareStats st;
    _PyCDS_GetShareStats(&st);
    /* the paths as os.fsdecode() gives them: any bytes */
    PyObject *list = fs_path(s->list_path);
    PyObject *archive = fs_path(s->archive_path);
    if (list == NULL || archive == NULL) {
        Py_XDECREF(list);
        Py_XDECREF(archive);
        return NULL;
    }
    PyObject *archives = PyList_New(0);
    for (int i = 0; archives != NULL && i < 2; i++) {
        const _PyCDS_ArchiveStats *as = &st.archive[i];
        PyObject *path = fs_path(as->path);
        PyObject *item = path == NULL ? NULL : Py_BuildValue(
            "{s:s,s:N,s:O,s:z,s:n,s:n,s:n}",
            "role", as->role, "path", path,
            "active", as->active ? Py_True : Py_False, "reason", as->reason,
            "modules", as->modules, "served", as->served,
            "stale", as->stale);
        if (item == NULL || PyList_Append(archives, item) < 0) {
            Py_CLEAR(archives);
        }
        Py_XDECREF(item);
    }
    if (archives == NULL) {
        Py_DECREF(list);
        Py_DECREF(archive);
        return NULL;
    }
    uint8_t fingerprint[32];
    char hex[65];
    _PyCDS_Fingerprint(fingerprint);
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", fingerprint[i]);
    }
    PyObject *info = Py_BuildValue(
        "{s:s,s:s,s:N,s:N,s:i,s:O,s:z,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,"
        "s:n,s:n,s:n,s:O,s:O,s:d,s:d,s:N,s:O,s:i,s:s}",
        "mode", s->auto_refresh ? "auto" : _PyCDS_ModeName(s->mode),
        "mode_source", s->mode_source,
        "list", list,
        "archive", archive,
        "verbose", s->verbose,
        "active", st.active ? Py_True : Py_False,
        "reason", st.reason,
        "modules", st.modules,
        "served", st.served,
        "specs_found", _PyCDS_SpecsFound,
        "stale", st.stale,
        "hashed", st.hashed,
        "missed", st.missed,
        "rejected", st.rejected,
        "prepared", st.prepared,
        "relocated", st.relocated,
        "released", st.released,
        "regexes", _PyCDS_RegexServed,
        "strings", st.strings,
        "mapped_at_preferred_address",
        st.at_preferred_address ? Py_True : Py_False,
        "protected", st.protected ? Py_True : Py_False,
        "open_seconds", st.open_seconds,
        "prepare_seconds", st.prepare_seconds,
        "archives", archives,
        "strict", s->strict ? Py_True : Py_False,
        "format_version", CDS_FORMAT_VERSION,
        "fingerprint", hex);
    return info;
}

/*[clinic input]
_cds.is_archived

    obj: object
    /

Return True if obj lives in the mapped code-object archive.
[clinic start generated code]*/

static PyObject *
_cds_is_archived(PyObject *module, PyObject *obj)
/*[clinic end generated code: output=9487ff20bf47e48c input=70c0e133704e3a6d]*/
{
    return PyBool_FromLong(_PyCDS_IsArchivedObject(obj));
}

/*[clinic input]
_cds.check

    check_source: bool = False
        Check the source hash of every source entry.
    /

Prepare and check every module of the archive in use (share mode).

Return a list of (kind, name, path, problem) tuples, one per index
entry, where problem is None if the entry can be served now, else why
not: the structural checks it fails (with -X cds_verify, the deep ones),
or "stale: ..." when its source changed.  Return None if no archive is in
use (_cds.info()["reason"] says why).  Preparing fixes the modules up in
this process: use a separate process (python -m cds verify).
[clinic start generated code]*/

static PyObject *
_cds_check_impl(PyObject *module, int check_source)
/*[clinic end generated code: output=3ca4cc452306d388 input=a5fcd9a030263491]*/
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode != _PyCDS_SHARE) {
        Py_RETURN_NONE;
    }
    return _PyCDS_ArchiveCheck(check_source || s->check_source);
}

static PyMethodDef cds_methods[] = {
    _CDS_CHECK_METHODDEF
    _CDS_INFO_METHODDEF
    _CDS_IS_ARCHIVED_METHODDEF
    {NULL, NULL}
};

PyDoc_STRVAR(cds_doc,
"Introspection of pycds code-object archives (-X cds).\n\
\n\
See the documentation of the cds options for the TRACE, DUMP and SHARE\n\
workflow.");

static PyModuleDef_Slot cds_slots[] = {
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL}
};

static struct PyModuleDef cds_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cds",
    .m_doc = cds_doc,
    .m_size = 0,
    .m_methods = cds_methods,
    .m_slots = cds_slots,
};

PyMODINIT_FUNC
PyInit__cds(void)
{
    return PyModuleDef_Init(&cds_module);
}
