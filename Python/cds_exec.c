/* pycds: the code of strings exec() and eval() run, archived.
 *
 * Programs compile source text as they start: collections.namedtuple()
 * evaluates a lambda for each new type, dataclasses execute the methods it
 * writes for each class (__init__, __repr__, __eq__, ...).  Each string
 * goes through the parser and the compiler, from about 0.1M to 1M
 * instructions, some 100M in pip's start-up.  The code of a string depends
 * only on the text, the start symbol (exec or eval), the compiler flags and
 * the interpreter (which the archive's fingerprint and -O level fix), so
 * an archive can hold it as it holds a module's:
 *
 *   TRACE: PyRun_StringFlags() -- what exec() and eval() of a str or bytes
 *   call -- records the text in the module list, as a line
 *   "builtins<TAB>string<TAB>START FLAGS FEATURE HEX" (the start symbol,
 *   the compiler flags and feature version, the text in hex).
 *
 *   DUMP: compiles it as PyRun_StringFlags() does, with warnings made
 *   errors (a text the compiler warns about is left to the compiler,
 *   which warns), unless it changes the flags (a __future__ import, which
 *   the caller's flags would carry on), and archives the code as an entry
 *   of kind KIND_STRING: named by a hash of (start, flags, feature, text),
 *   with the text itself as its path, so that the index lookup compares
 *   it whole.
 *
 *   SHARE: PyRun_StringFlags() runs the archived code when an entry holds
 *   this exact text with these flags, served as a module's code is (its
 *   top-level code object a heap copy, the functions' code archived),
 *   after the "compile" audit event the parser would have raised.
 *
 * As with modules imported again, a text run twice gives functions that
 * share their (archived) code objects.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#define MAX_TEXT 8000             /* bytes of a recorded text */
#define MAX_TRACED 10000          /* texts a process records */

/* Whether an exec()/eval() of this text may be archived; its flags. */
static int
archivable(const char *text, int start, const PyCompilerFlags *flags,
           int *cf_flags, int *feature)
{
    *cf_flags = flags ? flags->cf_flags : 0;
    *feature = flags ? flags->cf_feature_version : PY_MINOR_VERSION;
    return (start == Py_file_input || start == Py_eval_input)
           && *cf_flags >= 0 && *feature >= 0
           && !(*cf_flags & PyCF_ONLY_AST) && strlen(text) <= MAX_TEXT;
}

/* The index name of (start, flags, feature, text). */
static void
entry_name(const char *text, int start, int cf_flags, int feature,
           char name[24])
{
    size_t len = strlen(text);
    uint64_t seed = (uint64_t)start ^ ((uint64_t)(uint32_t)cf_flags << 16)
                    ^ ((uint64_t)feature << 48) ^ ((uint64_t)len << 24);
    _PyCDS_HashName('x', _PyCDS_Checksum(seed, text, len), name);
}

void
_PyCDS_TraceString(const char *text, int start, PyCompilerFlags *flags)
{
    static int traced;
    int cf_flags, feature;
    if (traced >= MAX_TRACED
        || !archivable(text, start, flags, &cf_flags, &feature))
    {
        return;
    }
    char prefix[48];
    snprintf(prefix, sizeof(prefix), "%d %d %d ", start, cf_flags, feature);
    char *field = _PyCDS_ListHexField(prefix, text, strlen(text));
    if (field != NULL) {
        _PyCDS_TraceEntry("builtins", "string", field);
        traced++;
        PyMem_RawFree(field);
    }
}

/* Archive the code of one "string" list entry ('field') unless the base
   archive holds it.  -1 only for a memory error; a text that cannot be
   archived is skipped. */
int
_PyCDS_DumpString(_PyCDS_Builder *w, const char *field,
                  _PyCDS_DumpCounts *counts)
{
    /* the list checked the syntax: three numbers, then the hex */
    char *end;
    long start = strtol(field, &end, 10);
    long cf_flags = strtol(end + 1, &end, 10);
    long feature = strtol(end + 1, &end, 10);
    size_t n;
    char *text = _PyCDS_ListUnhex(end + 1, &n);
    if (text == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyCompilerFlags cf = _PyCompilerFlags_INIT;
    cf.cf_flags = (int)cf_flags;
    cf.cf_feature_version = (int)feature;
    char name[24];
    int ok = strlen(text) == n && cf_flags <= INT_MAX && feature <= INT_MAX
             && archivable(text, (int)start, &cf, &cf.cf_flags,
                           &cf.cf_feature_version);
    if (ok) {
        entry_name(text, (int)start, cf.cf_flags, cf.cf_feature_version, name);
    }
    if (ok && _PyCDS_BaseHolds(KIND_STRING, name, text)) {
        counts->in_base++;
        PyMem_RawFree(text);
        return 0;
    }
    PyObject *code = ok ? Py_CompileStringExFlags(text, "<string>", (int)start,
                                                  &cf, -1)
                        : NULL;
    PyObject *path = code ? PyBytes_FromStringAndSize(text, (Py_ssize_t)n)
                          : NULL;
    PyObject *pyname = path ? PyUnicode_FromString(name) : NULL;
    int err = 0;
    if (pyname == NULL || cf.cf_flags != (int)cf_flags) {
        /* not compiled, or it imports from __future__ */
        if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            err = -1;
        }
        else {
            _PyCDS_Log(2, "dump: string %s not archived", ok ? name : "?");
            PyErr_Clear();
            counts->skipped++;
        }
    }
    else if (_PyCDS_BuilderAddModule(w, KIND_STRING, pyname, path, NULL,
                                     code) < 0)
    {
        err = PyErr_ExceptionMatches(PyExc_MemoryError) ? -1 : 0;
        if (err == 0) {
            PyErr_Clear();
            counts->skipped++;
        }
    }
    else {
        counts->archived++;
    }
    Py_XDECREF(pyname);
    Py_XDECREF(path);
    Py_XDECREF(code);
    PyMem_RawFree(text);
    return err;
}

PyObject *
_PyCDS_StringCode(const char *text, int start, PyCompilerFlags *flags)
{
    int cf_flags, feature;
    if (!archivable(text, start, flags, &cf_flags, &feature)
        || !_PyCDS_ArchiveHolds(KIND_STRING))
    {
        return NULL;
    }
    char name[24];
    entry_name(text, start, cf_flags, feature, name);
    PyObject *code = _PyCDS_ArchiveString(name, text);
    if (code != NULL) {
        /* the event the parser raises for the text it would have read */
        PyObject *filename = PyUnicode_FromString("<string>");
        if (filename == NULL
            || PySys_Audit("compile", "yO", text, filename) < 0)
        {
            Py_CLEAR(code);
        }
        Py_XDECREF(filename);
    }
    return code;
}
