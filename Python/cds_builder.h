/* pycds: the builder's state, shared by the object builder (cds_builder.c)
 * and the layout of the file (cds_layout.c); private to those two.
 */
#ifndef Py_CDS_BUILDER_H
#define Py_CDS_BUILDER_H

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "cds_internal.h"

/* DUMP only: the start-up strings, written first in R_STR (cds_dump.c) */
#define R_SEED CDS_NREGIONS
/* DUMP only: the code objects of a module that SHARE serves as heap copies
   (its own and the class bodies it runs: cds_format.h), moved to the end
   of its R_CODE range once the module is written (cds_builder.c) */
#define R_ONCE (CDS_NREGIONS + 1)

/* A growing byte buffer (the raw allocator; zero-filled) */
typedef struct {
    char *data;
    size_t len, cap;
} buffer;

extern int _PyCDS_BufAppend(buffer *b, const void *data, size_t size);

/* What a pointer slot points at: an object of the archive (laid out for
   the preferred address) or one of the interpreter image.  The file does
   not record it: the slot's value tells (cds_format.h). */
enum { RELOC_ARCHIVE = 0, RELOC_IMAGE = 1 };

/* A pointer slot, by region and offset within the region. */
typedef struct {
    uint32_t region;
    uint32_t kind;        /* RELOC_* for pointers, FIXUP_* for fixups */
    uint64_t offset;
    uint32_t target_region;
    uint64_t target;      /* offset in target_region (RELOC_ARCHIVE) */
} slot_rec;

typedef struct {
    slot_rec *items;
    size_t len, cap;
} slot_vec;

/* A module added to the builder: where its objects are in each region,
   and its pointer slots and fixups */
typedef struct {
    uint32_t kind;
    PyObject *name;      /* str */
    PyObject *path;      /* bytes (file system encoding) or NULL */
    _PyCDS_SourceStamp stamp;   /* zero for a frozen module */
    uint32_t code_region;
    uint64_t code;
    uint64_t start[CDS_NREGIONS], end[CDS_NREGIONS];
    size_t ptr_start, ptr_end;       /* in writer.ptrs */
    uint64_t reloc_word;             /* layout: its relocation bitmap */
    size_t fix_start, fix_end;       /* in writer.fixups */
} module_rec;

struct _PyCDS_Builder {
    const _PyCDS_Image *image;          /* the interpreter image */
    buffer region[CDS_NREGIONS + 2];    /* and R_SEED, R_ONCE */
    PyObject *strings;    /* interned str -> (offset << 3) | region, one
                             per archive, in R_STR or R_SEED */
    PyObject *startup;    /* set of the start-up strings, or NULL */
    slot_vec ptrs;        /* pointer slots (relocations) */
    slot_vec fixups;      /* fixups, in the order they must run */
    slot_vec mod_interns, mod_frozensets, mod_codes;   /* per module */
    module_rec *modules;
    size_t nmodules, capmodules;
    PyObject *memo;       /* id(obj) -> (region, offset), per module */
    PyObject *once;       /* ids of the module's run-once code objects */
    PyObject *keep;       /* objects made while dumping, kept alive */
    Py_ssize_t objects;
    uint32_t code_versions;   /* code objects given a co_version so far */
};
typedef struct _PyCDS_Builder writer;

#endif /* !Py_CDS_BUILDER_H */
