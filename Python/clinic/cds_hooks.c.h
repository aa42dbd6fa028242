/*[clinic input]
preserve
[clinic start generated code]*/

#include "pycore_modsupport.h"    // _PyArg_CheckPositional()

PyDoc_STRVAR(_imp__cds_find_code__doc__,
"_cds_find_code($module, name, path, /)\n"
"--\n"
"\n"
"The archived code object of a source module, or None.\n"
"\n"
"Called by importlib\'s SourceLoader.get_code() for the source file \'path\'\n"
"the finders located.  With -X cds=share, return the code object of the\n"
"archive entry made from exactly that file (same path, size and mtime), or\n"
"None for the normal .pyc path.  With -X cds=trace, record the module and\n"
"return None.  Otherwise return None.");

#define _IMP__CDS_FIND_CODE_METHODDEF    \
    {"_cds_find_code", _PyCFunction_CAST(_imp__cds_find_code), METH_FASTCALL, _imp__cds_find_code__doc__},

static PyObject *
_imp__cds_find_code_impl(PyObject *module, PyObject *name, PyObject *path);

static PyObject *
_imp__cds_find_code(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *return_value = NULL;
    PyObject *name;
    PyObject *path;

    if (!_PyArg_CheckPositional("_cds_find_code", nargs, 2, 2)) {
        goto exit;
    }
    name = args[0];
    path = args[1];
    return_value = _imp__cds_find_code_impl(module, name, path);

exit:
    return return_value;
}

PyDoc_STRVAR(_imp__cds_find_spec__doc__,
"_cds_find_spec($module, name, path, /)\n"
"--\n"
"\n"
"The spec the normal search finds for an archived module, or None.\n"
"\n"
"Called first by importlib._bootstrap._find_spec(), with the same\n"
"arguments.  With -X cds=share and a module the archive holds, make the\n"
"search of the default finders in C and return the spec when it proves\n"
"that the search finds the archived source file; otherwise return None and\n"
"the Python search runs.");

#define _IMP__CDS_FIND_SPEC_METHODDEF    \
    {"_cds_find_spec", _PyCFunction_CAST(_imp__cds_find_spec), METH_FASTCALL, _imp__cds_find_spec__doc__},

static PyObject *
_imp__cds_find_spec_impl(PyObject *module, PyObject *name, PyObject *path);

static PyObject *
_imp__cds_find_spec(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *return_value = NULL;
    PyObject *name;
    PyObject *path;

    if (!_PyArg_CheckPositional("_cds_find_spec", nargs, 2, 2)) {
        goto exit;
    }
    name = args[0];
    path = args[1];
    return_value = _imp__cds_find_spec_impl(module, name, path);

exit:
    return return_value;
}

PyDoc_STRVAR(_imp__cds_regex__doc__,
"_cds_regex($module, pattern, flags, /)\n"
"--\n"
"\n"
"The program of a regular expression the archive holds, or None.\n"
"\n"
"Called by re._compiler.compile() for a pattern it is to compile.  With\n"
"-X cds=share, return the arguments after the pattern that _sre.compile()\n"
"takes for it -- (flags, code, groups, groupindex, indexgroup) -- when an\n"
"archive holds its program, made by the re package this process runs.  With\n"
"-X cds=trace, record the pattern and return None.  Otherwise return None.");

#define _IMP__CDS_REGEX_METHODDEF    \
    {"_cds_regex", _PyCFunction_CAST(_imp__cds_regex), METH_FASTCALL, _imp__cds_regex__doc__},

static PyObject *
_imp__cds_regex_impl(PyObject *module, PyObject *pattern, PyObject *flags);

static PyObject *
_imp__cds_regex(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *return_value = NULL;
    PyObject *pattern;
    PyObject *flags;

    if (!_PyArg_CheckPositional("_cds_regex", nargs, 2, 2)) {
        goto exit;
    }
    pattern = args[0];
    flags = args[1];
    return_value = _imp__cds_regex_impl(module, pattern, flags);

exit:
    return return_value;
}

PyDoc_STRVAR(_cds_info__doc__,
"info($module, /)\n"
"--\n"
"\n"
"Return a dict describing the code-object archive settings and state.\n"
"\n"
"Keys: mode and mode_source, list, archive, verbose, strict; active (an\n"
"archive is mapped) and reason (why not); archives, a list of dicts\n"
"(role, path, active, reason, modules, served, stale) for the application\n"
"archive and the base archive (role \"default\" for the installation\'s\n"
"default archive); modules in the archives; the counters\n"
"served, specs_found, stale, hashed (source hashes checked), missed,\n"
"rejected, prepared, relocated, released and regexes (programs of\n"
"regular expressions served);\n"
"mapped_at_preferred_address, protected; open_seconds and\n"
"prepare_seconds (time spent opening and preparing the archive);\n"
"format_version and fingerprint (in hexadecimal), what an archive must\n"
"have for this interpreter to use it.");

#define _CDS_INFO_METHODDEF    \
    {"info", (PyCFunction)_cds_info, METH_NOARGS, _cds_info__doc__},

static PyObject *
_cds_info_impl(PyObject *module);

static PyObject *
_cds_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _cds_info_impl(module);
}

PyDoc_STRVAR(_cds_is_archived__doc__,
"is_archived($module, obj, /)\n"
"--\n"
"\n"
"Return True if obj lives in the mapped code-object archive.");

#define _CDS_IS_ARCHIVED_METHODDEF    \
    {"is_archived", (PyCFunction)_cds_is_archived, METH_O, _cds_is_archived__doc__},

PyDoc_STRVAR(_cds_check__doc__,
"check($module, check_source=False, /)\n"
"--\n"
"\n"
"Prepare and check every module of the archive in use (share mode).\n"
"\n"
"  check_source\n"
"    Check the source hash of every source entry.\n"
"\n"
"Return a list of (kind, name, path, problem) tuples, one per index\n"
"entry, where problem is None if the entry can be served now, else why\n"
"not: the structural checks it fails (with -X cds_verify, the deep ones),\n"
"or \"stale: ...\" when its source changed.  Return None if no archive is in\n"
"use (_cds.info()[\"reason\"] says why).  Preparing fixes the modules up in\n"
"this process: use a separate process (python -m cds verify).");

#define _CDS_CHECK_METHODDEF    \
    {"check", _PyCFunction_CAST(_cds_check), METH_FASTCALL, _cds_check__doc__},

static PyObject *
_cds_check_impl(PyObject *module, int check_source);

static PyObject *
_cds_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *return_value = NULL;
    int check_source = 0;

    if (!_PyArg_CheckPositional("check", nargs, 0, 1)) {
        goto exit;
    }
    if (nargs < 1) {
        goto skip_optional;
    }
    check_source = PyObject_IsTrue(args[0]);
    if (check_source < 0) {
        goto exit;
    }
skip_optional:
    return_value = _cds_check_impl(module, check_source);

exit:
    return return_value;
}
/*[clinic end generated code: output=eb689f1e995c904b input=a9049054013a1b77]*/
