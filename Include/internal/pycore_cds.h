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
    /* -X cds=auto: share mode (mode is _PyCDS_SHARE) that refreshes its
       application archive at exit when it did not serve (cds_auto.c) */
    int auto_refresh;
    int verbose;
    char *list_path;       /* absolute, or NULL when not set */
    char *archive_path;    /* absolute, or NULL when not set: in share
                              mode, the application archive */
    /* the base archive, under the application archive: absolute, or NULL
       for the installation's default archive (cds_share.c), unless
       base_none (-X cds_base=none) */
    char *base_path;
    int base_none;
    /* -X cds_strict: an archive that cannot be used stops start-up */
    int strict;
    /* -X cds_in_place (testing): relocate an archive in place even where
       SHARE would copy its modules to the heap (the image moved: PIE) */
    int in_place;
    /* -X cds_dump_strip=PREFIX: DUMP records source paths without this
       prefix (the staging directory of make install DESTDIR=...) */
    char *dump_strip;
    /* where each value came from, for introspection ("-X", "env", ...) */
    const char *mode_source;
    /* -X cds_relocate (testing): map away from the preferred address */
    int force_relocation;
    /* -X cds_protect: map the never-written parts of the archive read-only,
       so that a write to them faults at once with a diagnostic */
    int protect;
    /* -X cds_verify: also check that an archived module's strings and ints
       are in canonical form before use (cds_verify.c) */
    int verify;
    /* -X cds_check_source: check every source entry's source hash, not
       only where stock CPython would read the source (cds_stale.c) */
    int check_source;
    /* PYTHONCDSSTATS: file to append SHARE counters to at exit, or NULL */
    char *stats_path;
} _PyCDS_Settings;

/* What upstream CPython calls; everything else is private to our files
   (Python/cds_internal.h).  Error conventions: PyStatus for the
   configuration; the hooks never fail start-up or imports, and the _imp
   and _cds functions raise exceptions as Python functions do. */

/* cds_config.c */
extern PyStatus _PyCDS_ReadConfig(const PyConfig *config);
extern const _PyCDS_Settings *_PyCDS_GetSettings(void);
extern const char *_PyCDS_ModeName(_PyCDS_Mode mode);
extern void _PyCDS_Log(int level, const char *fmt, ...);

/* cds_hooks.c: the interpreter's entry points */
/* pylifecycle.c: SHARE maps the archive and interns its start-up strings
   as soon as the interpreter can intern (main interpreter only) */
extern void _PyCDS_InitInterp(PyInterpreterState *interp);
/* pylifecycle.c, before site: DUMP notes the strings start-up has
   interned; SHARE installs the fault handler of -X cds_protect */
extern void _PyCDS_BeforeSite(PyInterpreterState *interp);
/* pylifecycle.c, after atexit: TRACE writes its list, SHARE its stats */
extern void _PyCDS_Fini(void);
/* main.c: -X cds=dump runs this instead of a program (exit status) */
extern int _PyCDS_RunDump(void);
/* import.c: the archived code of a frozen module (new reference), or NULL
   (with an exception only on error) for the normal unmarshalling */
extern PyObject *_PyCDS_FindFrozenCode(PyObject *name);
/* PyRun_StringFlags() (exec() and eval() of a string): the archived code
   of 'text' to run instead of compiling it (a new reference), or NULL
   (with an exception only for a memory error) */
extern PyObject *_PyCDS_StringCodeHook(const char *text, int start,
                                       PyCompilerFlags *flags);
/* import.c, imp_module_exec(): add _imp._cds_find_code() and
   _imp._cds_find_spec(), the hooks importlib calls */
extern int _PyCDS_AddImpFunctions(PyObject *imp_module);
/* Modules/config.c: the _cds built-in module */
extern PyObject *PyInit__cds(void);

/* cds_share.c: the read-only (cold) regions of the archives mapped in
   place: objects that nothing may write to, so that their pages stay
   shared between processes.  bytes_hash() does not cache a hash there.
   Both bounds are 0 while no archive is mapped. */
extern uintptr_t _PyCDS_ReadOnlyStart[2];
extern uintptr_t _PyCDS_ReadOnlyEnd[2];

static inline int
_PyCDS_IsReadOnly(const void *op)
{
    return ((uintptr_t)op - _PyCDS_ReadOnlyStart[0]
            < _PyCDS_ReadOnlyEnd[0] - _PyCDS_ReadOnlyStart[0])
           || ((uintptr_t)op - _PyCDS_ReadOnlyStart[1]
               < _PyCDS_ReadOnlyEnd[1] - _PyCDS_ReadOnlyStart[1]);
}

/* cds_filemap.c: make the pages of [addr, addr + len) of a private
   mapping present and writable in one call, where a page fault per
   page costs more (in a virtual machine, twice as much); only a hint, and
   a kernel without it (before Linux 5.14) is asked once.  errno is kept.
   Used by copy mode's module blocks and by the object allocator's pools
   (Objects/obmalloc.c). */
extern void _PyCDS_Populate(void *addr, size_t len);

/* Archived code objects carry versions (co_version) from this value up,
   given at dump time so that loading them writes nothing; the counter for
   new code objects stops below it (see init_code()). */
#define _PyCDS_CODE_VERSION_BASE 0x80000000u

/* Helpers our files call in upstream files (patched in). */
/* Objects/codeobject.c: init_code()'s per-process part for an archived
   code object (it writes nothing to it) */
extern void _PyCode_InitArchived(PyCodeObject *co);
/* Objects/unicodeobject.c: intern a string of the archive; returns the
   canonical string */
extern PyObject *_PyUnicode_InternArchived(PyInterpreterState *interp,
                                           PyObject *s);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_CDS_H */
