/* pycds: code-object archives (CDS) shared between processes.
 *
 * TRACE records the modules a program imports into a module list, DUMP
 * writes their code objects into an archive file, and SHARE maps that file
 * and serves the code objects in place instead of unmarshalling .pyc files.
 * See Doc/library/cds.rst (user guide) and Doc/library/cds-format.rst (the
 * archive format).
 */
#ifndef Py_INTERNAL_CDS_H
#define Py_INTERNAL_CDS_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

typedef enum {
    _PyCDS_OFF = 0,
    _PyCDS_TRACE,
    _PyCDS_DUMP,
    _PyCDS_SHARE,
} _PyCDS_Mode;

/* Effective settings, read once from -X options and the environment. */
typedef struct {
    _PyCDS_Mode mode;
    int verbose;
    char *list_path;       /* absolute, or NULL when not set */
    char *archive_path;    /* absolute, or NULL when not set */
    /* where each value came from, for introspection ("-X", "env", ...) */
    const char *mode_source;
    /* -X cds_relocate (testing): map away from the preferred address */
    int force_relocation;
    /* -X cds_protect: map the never-written parts of the archive read-only,
       so that a write to them faults at once with a diagnostic */
    int protect;
} _PyCDS_Settings;

/* Default file names, relative to the working directory at start-up. */
#define _PyCDS_DEFAULT_LIST "pycds.lst"
#define _PyCDS_DEFAULT_ARCHIVE "pycds.cds"

/* cds_config.c */
extern PyStatus _PyCDS_ReadConfig(const PyConfig *config);
extern const _PyCDS_Settings *_PyCDS_GetSettings(void);
extern const char *_PyCDS_ModeName(_PyCDS_Mode mode);
extern void _PyCDS_Log(int level, const char *fmt, ...);

/* cds_trace.c: module lists */
extern void _PyCDS_TraceModule(const char *kind, PyObject *name,
                               PyObject *path);
extern void _PyCDS_Fini(void);

typedef struct {
    char *name;     /* dotted module name */
    char *kind;     /* "source" or "frozen" */
    char *path;     /* source path, or NULL */
} _PyCDS_ListEntry;

typedef struct {
    _PyCDS_ListEntry *items;
    Py_ssize_t len;
    Py_ssize_t cap;
} _PyCDS_List;

/* Returns 0 on success (a missing file is an empty list), -1 on a
   garbled file or I/O error with a message in errbuf. */
extern int _PyCDS_ListRead(const char *path, _PyCDS_List *list,
                           char *errbuf, size_t errlen);
extern void _PyCDS_ListClear(_PyCDS_List *list);
extern int _PyCDS_WriteAll(int fd, const void *data, size_t len);
extern int _PyCDS_EncodePath(PyObject *path, PyObject **bytes,
                             const char **cpath);

/* cds_archive.c / cds_import.c: DUMP and SHARE */
extern int _PyCDS_RunDump(void);   /* returns the process exit status */
/* The archived code object of module 'name' of the given kind ("source",
   with the path the finder located, or "frozen"), as a new reference; NULL
   without an exception when the archive has no current entry for it. */
extern PyObject *_PyCDS_ArchiveLookup(const char *kind, PyObject *name,
                                      PyObject *path);
extern PyObject *_PyCDS_FindFrozenCode(PyObject *name);
/* pylifecycle.c: SHARE maps the archive and interns its start-up strings
   as soon as the interpreter can intern (main interpreter only); DUMP takes
   note of the strings start-up has interned, and SHARE installs the fault
   handler of -X cds_protect, before site runs. */
extern void _PyCDS_InitInterp(PyInterpreterState *interp);
extern void _PyCDS_BeforeSite(PyInterpreterState *interp);
extern int _PyCDS_IsArchivedObject(PyObject *op);

/* The archive's read-only (cold) region: objects that nothing may write
   to, so that their pages stay shared between processes.  Hash caching
   skips them (see unicode_hash() and bytes_hash()).  Both bounds are 0
   while no archive is mapped. */
extern uintptr_t _PyCDS_ReadOnlyStart;
extern uintptr_t _PyCDS_ReadOnlyEnd;

static inline int
_PyCDS_IsReadOnly(const void *op)
{
    return ((uintptr_t)op - _PyCDS_ReadOnlyStart
            < _PyCDS_ReadOnlyEnd - _PyCDS_ReadOnlyStart);
}

/* Archived code objects carry versions (co_version) from this value up,
   given at dump time so that loading them writes nothing; the counter for
   new code objects stops below it (see init_code()). */
#define _PyCDS_CODE_VERSION_BASE 0x80000000u
extern void _PyCDS_WriteStats(void);
extern void _PyCDS_ArchiveFini(void);
extern PyObject *_PyCDS_Info(void);

/* _imp._cds_find_code(): the one hook called from
   importlib._bootstrap_external.SourceLoader.get_code() */
extern PyObject *_PyCDS_imp_find_code(PyObject *module,
                                      PyObject *const *args,
                                      Py_ssize_t nargs);
/* _imp._cds_find_spec(): the fast path of importlib._bootstrap._find_spec()
   for archived modules (cds_finder.c) */
extern PyObject *_PyCDS_imp_find_spec(PyObject *module,
                                      PyObject *const *args,
                                      Py_ssize_t nargs);
extern int _PyCDS_ArchiveHasSource(PyObject *name, PyObject *path);
extern Py_ssize_t _PyCDS_SpecsFound;
#define _PyCDS_IMP_METHODDEF \
    {"_cds_find_code", _PyCFunction_CAST(_PyCDS_imp_find_code), \
     METH_FASTCALL, NULL}, \
    {"_cds_find_spec", _PyCFunction_CAST(_PyCDS_imp_find_spec), \
     METH_FASTCALL, NULL},

/* The _cds built-in module. */
extern PyObject *PyInit__cds(void);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_CDS_H */
