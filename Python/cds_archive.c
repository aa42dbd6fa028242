/* pycds: DUMP and SHARE (not implemented yet). */

#include "Python.h"
#include "pycore_cds.h"

int
_PyCDS_RunDump(void)
{
    fprintf(stderr, "cds: dump mode is not available yet\n");
    return 1;
}

PyObject *
_PyCDS_ArchiveLookup(const char *kind, PyObject *name, PyObject *path)
{
    return NULL;
}

int
_PyCDS_IsArchivedObject(PyObject *op)
{
    return 0;
}

PyObject *
_PyCDS_Info(void)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    return Py_BuildValue("{s:s,s:s,s:z,s:z,s:i,s:O}",
                         "mode", _PyCDS_ModeName(s->mode),
                         "mode_source", s->mode_source,
                         "list", s->list_path,
                         "archive", s->archive_path,
                         "verbose", s->verbose,
                         "active", Py_False);
}
