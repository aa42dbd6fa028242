/* pycds: what our files call in each other (upstream CPython calls only
 * what Include/internal/pycore_cds.h declares).
 *
 * The calls point one way, from the entry points down:
 *
 *   cds_hooks.c  ->  cds_trace.c  cds_dump.c  cds_share.c  cds_finder.c
 *   cds_finder.c ->  cds_share.c
 *   cds_trace.c  ->  cds_list.c
 *   cds_dump.c   ->  cds_list.c  cds_builder.c  cds_layout.c  cds_filemap.c
 *                    cds_stale.c  cds_share.c (what the base archive holds)
 *   cds_layout.c ->  cds_builder.c (its buffers, cds_builder.h)
 *   cds_share.c  ->  cds_prepare.c  cds_filemap.c  cds_protect.c  cds_stale.c
 *   cds_prepare.c -> cds_verify.c  cds_protect.c
 *   cds_builder.c, cds_layout.c, cds_filemap.c, cds_protect.c, cds_list.c,
 *   cds_stale.c  ->  cds_format.c  cds_fileio.c
 *
 * and every file may log and read the settings (cds_config.c).
 */
#ifndef Py_CDS_INTERNAL_H
#define Py_CDS_INTERNAL_H

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "cds_format.h"

struct stat;

/* What an index entry records of its source file (cds_stale.c) */
typedef struct {
    int64_t mtime_ns, size;
    uint64_t source_hash;
    int64_t pyc_mtime_ns, pyc_size;
} _PyCDS_SourceStamp;

/* --- cds_fileio.c: durable file replacement, file names ------------------ */

extern int _PyCDS_WriteAll(int fd, const void *data, size_t len);
/* 'path' (str) in the file system encoding; -1, no exception, if it
   cannot be encoded. */
extern int _PyCDS_EncodePath(PyObject *path, PyObject **bytes,
                             const char **cpath);

/* Open a regular file read-only, never blocking: -1 with errno (EINVAL:
   not a regular file). */
extern int _PyCDS_OpenRegular(const char *path, struct stat *st);
/* The directory part of 'path' ("." if none), freed with PyMem_RawFree() */
extern char *_PyCDS_DirectoryOf(const char *path);

/* A temporary file beside 'path' that replaces it when committed:
   unnamed until then where the file system allows (O_TMPFILE), else
   created under a fresh random name, never through a link. */
typedef struct {
    int fd;
    char *tmp;                   /* its name, once it has one */
    int named;                   /* whether 'tmp' exists */
    const char *path;
} _PyCDS_TempFile;

extern int _PyCDS_TempFileOpen(_PyCDS_TempFile *t, const char *path);
/* fsync, close, rename over the path, fsync the directory; on failure
   the temporary file is removed. */
extern int _PyCDS_TempFileCommit(_PyCDS_TempFile *t);
extern void _PyCDS_TempFileAbort(_PyCDS_TempFile *t);

/* --- cds_list.c: module lists ------------------------------------------ */

typedef struct {
    char *name;     /* dotted module name */
    char *kind;     /* "source" or "frozen" */
    char *path;     /* source path, or NULL */
} _PyCDS_ListEntry;

typedef struct {
    _PyCDS_ListEntry *items;
    Py_ssize_t len;
    Py_ssize_t cap;
    size_t *slots;               /* hash index of the entries */
    size_t nslots;
} _PyCDS_List;

/* Bounds of what a module list may hold */
#define CDS_LIST_MAX_LINE 16384
#define CDS_LIST_MAX_ENTRIES 1000000

/* Returns 0 on success (a missing file is an empty list), -1 on a
   garbled file or I/O error with a message in errbuf. */
extern int _PyCDS_ListRead(const char *path, _PyCDS_List *list,
                           char *errbuf, size_t errlen);
/* Append unless present: 1 if appended, 0 if present, -1 out of memory */
extern int _PyCDS_ListAdd(_PyCDS_List *list, const char *name,
                          const char *kind, const char *path);
extern int _PyCDS_ListWrite(const char *path, const _PyCDS_List *list);
extern void _PyCDS_ListClear(_PyCDS_List *list);
extern int _PyCDS_ValidModuleName(const char *name);
/* "PREFIX" then the hex digits of 'data' (a list field), or NULL if out
   of memory or too long for a line; and back to bytes ('n' of them, then
   a NUL): both of the raw allocator */
extern char *_PyCDS_ListHexField(const char *prefix, const void *data,
                                 size_t n);
extern char *_PyCDS_ListUnhex(const char *hex, size_t *n);

/* --- cds_builder.c, cds_layout.c: objects to a laid-out archive --------- */

/* An archive laid out in memory: the header and what the file holds, in
   file order, the gaps between pieces being zeros.  The pieces point into
   the layout's own tables and the builder's regions. */
#define CDS_MAX_PIECES (6 + CDS_NREGIONS)
typedef struct {
    cds_header header;           /* 'complete' is 0: written last */
    struct {
        uint64_t offset;
        const void *data;
        uint64_t len;
    } piece[CDS_MAX_PIECES];
    int npieces;
    cds_index_entry *index;      /* owned */
    char *strtab;                /* owned */
    uint64_t *relocs;            /* owned */
    cds_fixup *fixups;           /* owned */
} _PyCDS_Layout;

typedef struct _PyCDS_Builder _PyCDS_Builder;

/* 'startup_strings': a list of the strings start-up interned, or NULL */
extern _PyCDS_Builder *_PyCDS_BuilderNew(PyObject *startup_strings);
extern void _PyCDS_BuilderFree(_PyCDS_Builder *b);
/* 'path' is bytes (file system encoding) and 'stamp' what identifies
   its contents (_PyCDS_SourceStampOf()); both NULL for a frozen module */
extern int _PyCDS_BuilderAddModule(_PyCDS_Builder *b, int kind,
                                   PyObject *name, PyObject *path,
                                   const _PyCDS_SourceStamp *stamp,
                                   PyObject *code);
extern int _PyCDS_BuilderHasSource(const _PyCDS_Builder *b, PyObject *name,
                                   PyObject *path);
extern Py_ssize_t _PyCDS_BuilderObjects(const _PyCDS_Builder *b);
/* cds_layout.c.  Valid while the builder lives; clear it with _PyCDS_LayoutClear(). */
extern int _PyCDS_BuilderLayout(_PyCDS_Builder *b, _PyCDS_Layout *layout);
extern void _PyCDS_LayoutClear(_PyCDS_Layout *layout);

/* --- cds_filemap.c: the archive file ------------------------------------ */

#define CDS_BOUNCE ((size_t)1 << 16)   /* _PyCDS_MapRead()'s buffer */

typedef struct {
    char *base;                  /* where the file is mapped */
    size_t size;
    const cds_header *hdr;
    const cds_index_entry *index;
    uint64_t modules;            /* index entries of modules (first) */
    uint64_t regexes;            /* of programs (then), then strings */
    const char *strtab;
    intptr_t archive_delta;      /* mapped base - preferred base */
    intptr_t image_delta;        /* image load address (0: not moved) */
    const char *path;
    /* copy mode reads modules with pread() (_PyCDS_MapRead): the file
       while _PyCDS_MapOpen() has it open, else -1, and its identity */
    int fd;
    dev_t dev;
    ino_t ino;
    char *bounce;                /* CDS_BOUNCE bytes pread() fills, or NULL */
} _PyCDS_Map;

extern int _PyCDS_WriteArchiveFile(const char *path,
                                   const _PyCDS_Layout *layout);
/* NULL when mapped, else why the archive cannot be used.  'anywhere':
   not at the preferred address (-X cds_relocate).  The file is closed. */
extern const char *_PyCDS_MapArchive(const char *path, int anywhere,
                                     _PyCDS_Map *map);
/* Open the mapped file again for _PyCDS_MapRead(), if its path still
   names it; _PyCDS_MapClose() closes it. */
extern void _PyCDS_MapOpen(_PyCDS_Map *map);
extern void _PyCDS_MapClose(_PyCDS_Map *map);
/* Copy 'len' bytes of the file at 'offset' to 'to': read from the file
   _PyCDS_MapOpen() opened, else from the mapping.  If 'sum' is not NULL,
   *sum becomes _PyCDS_Checksum(*sum, to, len). */
extern void _PyCDS_MapRead(const _PyCDS_Map *map, void *to, uint64_t offset,
                           uint64_t len, uint64_t *sum);
extern void _PyCDS_UnmapArchive(_PyCDS_Map *map);

/* --- cds_protect.c: -X cds_protect ------------------------------------- */

extern void _PyCDS_ProtectArchive(const _PyCDS_Map *map);
/* File offsets of the protected archive, made writable or read-only */
extern void _PyCDS_ProtectRange(const _PyCDS_Map *map, uint64_t start,
                                uint64_t end, int writable);
extern void _PyCDS_InstallFaultHandler(void);

/* --- where a module's objects are ---------------------------------------- */

/* The memory of each of a module's ranges: in the mapping (relocated in
   place), or in a heap copy (cds_prepare.c).  at[r] holds the range of
   region r + 1, whose file offsets are e->range[r]. */
typedef struct {
    const cds_index_entry *e;
    char *at[CDS_NRANGES];
} _PyCDS_View;

/* The address of the module's file offset 'off' (which must be in one of
   its ranges), or NULL */
static inline char *
_PyCDS_ViewAddr(const _PyCDS_View *v, uint64_t off)
{
    for (int r = 0; r < CDS_NRANGES; r++) {
        const uint64_t *range = v->e->range[r];
        if (off >= range[0] && off < range[1]) {
            return v->at[r] + (off - range[0]);
        }
    }
    return NULL;
}

/* The file offset of the address 'p' of the module's memory, or
   UINT64_MAX if 'p' is not there; *r is set to the range. */
static inline uint64_t
_PyCDS_ViewOffset(const _PyCDS_View *v, const void *p, int *r)
{
    for (int i = 0; i < CDS_NRANGES; i++) {
        const uint64_t *range = v->e->range[i];
        uint64_t d = (uint64_t)((uintptr_t)p - (uintptr_t)v->at[i]);
        if (d < range[1] - range[0]) {
            *r = i;
            return range[0] + d;
        }
    }
    return UINT64_MAX;
}

/* --- cds_verify.c: structural checks before use ------------------------- */

/* Whether a well-formed compact string is in canonical form (-X cds_verify) */
extern int _PyCDS_CanonicalString(const PyASCIIObject *s);
/* NULL if the module's objects may be used (after relocation, before its
   fixups), else why not.  'str_valid': a bit per 16 bytes of R_STR, set
   where a shared string was checked well-formed (the module's own are,
   by its checksum); 'deep': values in canonical form too (-X cds_verify).
   'tail': an address in the view (or UINTPTR_MAX); *tail_free is set to
   whether nothing the module keeps using once its run-once code objects
   have been copied (code objects of its functions, code fixups) lies at
   or after it. */
extern const char *_PyCDS_VerifyModule(const _PyCDS_Map *map,
                                       const _PyCDS_View *view,
                                       const cds_index_entry *e,
                                       const cds_fixup *fixups,
                                       const uint8_t *str_valid,
                                       int deep, uintptr_t tail,
                                       int *tail_free);

/* --- cds_stale.c: whether a source entry is current -------------------- */

/* DUMP: the stamp of the regular file 'path' (stat 'st'), read after its
   code was made: 0, or -1 if it cannot be read or it changed. */
extern int _PyCDS_SourceStampOf(const char *path, const struct stat *st,
                                _PyCDS_SourceStamp *stamp);
/* NULL if the entry may be served for the source file 'path' (stamps,
   and the hash where stock would read the source, or always if
   'check_always'), else why not; *hashed is 1 if the hash was checked. */
extern const char *_PyCDS_SourceStale(const cds_index_entry *e,
                                      const char *path, int check_always,
                                      int *hashed);

/* --- cds_prepare.c: making one module usable ---------------------------- */

/* The heap copy of a module's code object, with its class bodies copied
   (they run once and write to their bytecode): a new reference */
extern PyObject *_PyCDS_CopyModuleCode(PyCodeObject *co);

/* CDS_MOD_SPENT: prepared and served in copy mode, and the memory of its
   run-once code objects then reused: a later import copies it again
   (cds_share.c) */
enum { CDS_MOD_UNTOUCHED = 0, CDS_MOD_READY = 1, CDS_MOD_BAD = 2,
       CDS_MOD_SPENT = 3 };

/* The mapped archive and what this process did to it */
typedef struct {
    _PyCDS_Map map;
    uint8_t *mod_state;          /* CDS_MOD_* of each index entry */
    uint8_t *str_ready;          /* a bit per 16-byte slot of R_STR: the
                                    shared string there is set up */
    uint8_t *str_valid;          /* and: checked well-formed */
    int protect;                 /* -X cds_protect: cold region read-only */
    int verify;                  /* -X cds_verify */
    /* Copy mode: each module's objects are copied to the heap when it is
       prepared and relocated there, and the mapping is only read, where
       relocating in place would write to every page (the interpreter
       image moved: PIE).  The copies take the memory a normal import
       takes; pages relocated in place would each be a private copy of a
       whole page, with objects of modules the process never imports. */
    int copy;
    char **mod_block;            /* copy mode: each module's heap copy */
    struct {                     /* copy mode: where those are carved from
                                    (cds_prepare.c: block_alloc()) */
        char *next, *present, *end;
        /* the last module prepared: where its run-once code objects
           start, if nothing else of it lies after them (else NULL), and
           where its block ends */
        char *once, *once_end;
        size_t once_index;
    } blocks;
    struct _PyCDS_StrCopy {      /* copy mode: the interned string the
                                    fixups of recently used shared strings
                                    resolve to, by offset in R_STR (a
                                    cache: cds_prepare.c) */
        uint64_t off;            /* 0: empty slot */
        PyObject *str;
    } *str_copy;
    Py_ssize_t prepared, relocated, released;
} _PyCDS_Archive;

/* Where the objects of prepared entry i are */
extern void _PyCDS_ModuleView(const _PyCDS_Archive *a, size_t i,
                              _PyCDS_View *view);

/* Verify, relocate and fix up the module of entry 'e', which must not
   have been prepared before: NULL, or why it cannot be used ("" if that
   was logged). */
/* The well-formed shared string at file offset 'off' of R_STR, or NULL;
   its first use in this process sets it up */
extern PyASCIIObject *_PyCDS_SharedString(_PyCDS_Archive *a, uint64_t off);
extern void _PyCDS_SetupSharedString(_PyCDS_Archive *a, PyObject *s);
extern const char *_PyCDS_PrepareModule(_PyCDS_Archive *a,
                                        const cds_index_entry *e,
                                        const char *name);
/* Copy mode, once the run-once code objects of prepared entry i have been
   copied: reuse their memory for the next module if it is the last
   block and nothing else of the module lies there; then the entry is
   CDS_MOD_SPENT.  Whether it was done. */
extern int _PyCDS_ReleaseRunOnce(_PyCDS_Archive *a, size_t i);

/* --- cds_share.c: SHARE ------------------------------------------------- */

extern int _PyCDS_ShareOpen(void);
extern void _PyCDS_ShareInit(PyInterpreterState *interp);
extern void _PyCDS_ShareBeforeSite(PyInterpreterState *interp);
extern void _PyCDS_ShareFini(void);
/* The archived code object of module 'name' of the given kind ("source",
   with the path the finder located, or "frozen"), as a new reference; NULL
   without an exception when the archive has no current entry for it. */
extern PyObject *_PyCDS_ArchiveLookup(const char *kind, PyObject *name,
                                      PyObject *path);
/* Whether the archive holds a usable entry for the source module 'name'
   made from 'path' (any path if NULL).  Never raises. */
extern int _PyCDS_ArchiveHasSource(PyObject *name, PyObject *path);
extern int _PyCDS_IsArchivedObject(PyObject *op);
/* DUMP: whether the base archive holds an entry of this kind (KIND_*) that
   share mode would serve for the module's file now */
extern int _PyCDS_BaseHolds(int kind, const char *name, const char *path);
/* The entries of regular expressions (cds_regex.c) and strings
   (cds_exec.c); see cds_share.c */
extern int _PyCDS_ArchiveHolds(uint32_t kind);
/* the code object of the string entry 'name' made from 'text', served as
   a module's is (a new reference), or NULL */
extern PyObject *_PyCDS_ArchiveString(const char *name, const char *text);
extern const cds_index_entry *_PyCDS_ArchiveEntry(uint32_t kind,
                                                  const char *name,
                                                  const char *path,
                                                  PyObject **code);
/* _cds.check(): every entry prepared and checked; see cds_share.c */
extern PyObject *_PyCDS_ArchiveCheck(int check_source);

typedef struct {
    const char *role;            /* "application", "base" or "default" */
    const char *path;            /* NULL: none */
    int active;
    const char *reason;          /* why not active */
    Py_ssize_t modules, served, stale;
} _PyCDS_ArchiveStats;

typedef struct {
    int active;                  /* an archive is in use */
    const char *reason;          /* why none is */
    _PyCDS_ArchiveStats archive[2];   /* application, base */
    Py_ssize_t modules, served, stale, hashed, missed, rejected, prepared,
               relocated, released, strings;
    Py_ssize_t missed_source;    /* of 'missed', source modules */
    int at_preferred_address;
    int protected;
    double open_seconds, prepare_seconds;
} _PyCDS_ShareStats;

extern void _PyCDS_GetShareStats(_PyCDS_ShareStats *stats);

/* --- cds_dump.c: DUMP --------------------------------------------------- */

extern void _PyCDS_NoteStartupStrings(PyInterpreterState *interp);
extern int _PyCDS_Dump(const _PyCDS_Settings *settings);  /* exit status */

/* --- cds_regex.c: the programs of regular expressions ------------------ */

extern void _PyCDS_TraceRegex(PyObject *pattern, PyObject *flags);
/* DUMP: what became of the entries of one kind */
typedef struct {
    int archived, in_base, skipped;
} _PyCDS_DumpCounts;
extern int _PyCDS_DumpRegex(_PyCDS_Builder *w, const char *field,
                            _PyCDS_DumpCounts *counts);
/* share mode: (flags, code, groups, groupindex, indexgroup) or NULL */
extern PyObject *_PyCDS_RegexProgram(PyObject *pattern, PyObject *flags);
extern Py_ssize_t _PyCDS_RegexServed;

/* --- cds_exec.c: the code of strings exec() and eval() run -------------- */

extern void _PyCDS_TraceString(const char *text, int start,
                               PyCompilerFlags *flags);
extern int _PyCDS_DumpString(_PyCDS_Builder *w, const char *field,
                             _PyCDS_DumpCounts *counts);
extern PyObject *_PyCDS_StringCode(const char *text, int start,
                                   PyCompilerFlags *flags);

/* --- cds_trace.c: TRACE ------------------------------------------------- */

extern void _PyCDS_TraceModule(const char *kind, PyObject *name,
                               PyObject *path);
extern void _PyCDS_TraceEntry(const char *name, const char *kind,
                              const char *field);
extern void _PyCDS_TraceFini(const char *list_path);
/* AUTO: the list locked without waiting and this process's entries merged
   into it (see cds_trace.c); -1 if not locked */
extern int _PyCDS_TraceMergeLocked(const char *list_path, int *busy,
                                   Py_ssize_t *added);
extern void _PyCDS_TraceUnlock(int lockfd);
extern void _PyCDS_TraceClear(void);

/* cds_config.c: a + b + c, a new string of the raw allocator (NULL if out
   of memory) */
extern char *_PyCDS_Concat(const char *a, const char *b, const char *c);

/* --- cds_auto.c: AUTO, share mode keeping its archive current ----------- */

extern void _PyCDS_AutoStart(void);
extern void _PyCDS_AutoFini(const _PyCDS_Settings *settings);

/* --- cds_finder.c: the C search of archived modules --------------------- */

/* The spec the normal search would find for 'name' (new reference), or
   None when that cannot be proven cheaply; never raises. */
extern PyObject *_PyCDS_FindSpec(PyObject *imp, PyObject *name,
                                 PyObject *path);
extern Py_ssize_t _PyCDS_SpecsFound;

#endif /* !Py_CDS_INTERNAL_H */
