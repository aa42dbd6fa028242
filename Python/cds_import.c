/* pycds: import-system integration and the _cds module.
 *
 * importlib._bootstrap_external.SourceLoader.get_code() makes one call,
 * _imp._cds_find_code(fullname, source_path), after the normal finders have
 * located the module's source file.  In TRACE mode the call records the
 * module; in SHARE mode it returns the archived code object when the
 * archive holds a current entry for that exact path, and None otherwise,
 * in which case the normal .pyc path runs.  Frozen modules are handled the
 * same way from Python/import.c.
 */

#include "Python.h"
#include "pycore_cds.h"

PyObject *
_PyCDS_imp_find_code(PyObject *module, PyObject *const *args,
                     Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "_cds_find_code(name, path): expected 2 arguments");
        return NULL;
    }
    if (!PyUnicode_CheckExact(args[0]) || !PyUnicode_CheckExact(args[1])) {
        /* e.g. a loader made with a path-like object: the normal path */
        Py_RETURN_NONE;
    }
    switch (_PyCDS_GetSettings()->mode) {
        case _PyCDS_TRACE:
            _PyCDS_TraceModule("source", args[0], args[1]);
            break;
        case _PyCDS_SHARE: {
            PyObject *code = _PyCDS_ArchiveLookup("source", args[0], args[1]);
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

PyObject *
_PyCDS_FindFrozenCode(PyObject *name)
{
    switch (_PyCDS_GetSettings()->mode) {
        case _PyCDS_TRACE:
            _PyCDS_TraceModule("frozen", name, NULL);
            return NULL;
        case _PyCDS_SHARE:
            return _PyCDS_ArchiveLookup("frozen", name, NULL);
        default:
            return NULL;
    }
}

/* --- the _cds module ----------------------------------------------------- */

PyDoc_STRVAR(cds_info_doc,
"info()\n\
--\n\
\n\
Return a dict describing the code-object archive settings and state:\n\
mode, list and archive paths, verbosity, whether an archive is mapped,\n\
and counters of modules served, stale and missed.");

static PyObject *
cds_info(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _PyCDS_Info();
}

PyDoc_STRVAR(cds_is_archived_doc,
"is_archived(obj, /)\n\
--\n\
\n\
Return True if obj lives in the mapped code-object archive.");

static PyObject *
cds_is_archived(PyObject *module, PyObject *obj)
{
    return PyBool_FromLong(_PyCDS_IsArchivedObject(obj));
}

static PyMethodDef cds_methods[] = {
    {"info", cds_info, METH_NOARGS, cds_info_doc},
    {"is_archived", cds_is_archived, METH_O, cds_is_archived_doc},
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
