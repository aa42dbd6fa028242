/* pycds: the archive file format, shared by the writer (cds_builder.c,
 * cds_filemap.c) and the reader (cds_filemap.c, cds_share.c).
 *
 * Doc/library/cds-format.rst specifies it; Lib/test/test_cds/format.py is
 * an independent reader written from that page.  A change here changes
 * CDS_FORMAT_VERSION, that page and that reader.  In short:
 *
 *   header page | module index | string table | relocations | fixups |
 *   object regions, grouped by what writes to them (see R_STR below)
 *
 * Objects are laid out in their final in-memory form (object headers,
 * inline data, pointers) for a preferred mapping address.  Every object is
 * immortal in the file itself and archived tuples are never GC-tracked, so
 * refcounting and the GC never write to the mapping.
 */
#ifndef Py_CDS_FORMAT_H
#define Py_CDS_FORMAT_H

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include <stdint.h>

/* Archives hold 64-bit object layouts with PEP 683 immortal refcounts. */
#if SIZEOF_VOID_P != 8 || defined(Py_GIL_DISABLED) || defined(Py_TRACE_REFS)
#  define CDS_SUPPORTED 0
#else
#  define CDS_SUPPORTED 1
#endif

#define CDS_MAGIC "PYCDS\r\n\x1a"
#define CDS_FORMAT_VERSION 4
#define CDS_COMPLETE 0x45544c504d4f43ULL     /* "COMPLETE"-ish marker */
#define CDS_PAGE 4096
/* Where DUMP lays the archive out and SHARE tries to map it: far from the
   heap, the stack, the executable and the shared libraries. */
#define CDS_PREFERRED_BASE ((uint64_t)0x200000000000ULL)
/* The installation's default archive, relative to its standard-library
   directory: a cache of the standard library's compiled code, beside its
   .pyc files (and removed with them by tools that strip caches), named
   for the interpreter's ABI. */
#ifdef Py_DEBUG
#  define CDS_ABI_SUFFIX "d"
#else
#  define CDS_ABI_SUFFIX ""
#endif
#define CDS_DEFAULT_ARCHIVE \
    "__pycache__/stdlib.cpython-" Py_STRINGIFY(PY_MAJOR_VERSION) \
    Py_STRINGIFY(PY_MINOR_VERSION) CDS_ABI_SUFFIX ".cds"
/* Objects start on 16-byte boundaries within their region. */
#define CDS_ALIGN 16

/* The object regions, in file order, grouped by what writes to them at run
   time, so that pages nothing writes stay shared between processes:
     R_STR   interned strings, one copy per archive: interning them writes
             their hash and state (each process), so they are together;
     R_TUP   tuples with slots that interning fixups may redirect;
     R_CODE  code objects (written when executed: specialization);
     R_WARM  other strings (written only if hashed or converted to UTF-8);
     R_COLD  everything else: never written (read-only with -X cds_protect).
   Each module owns a range in each region but R_STR. */
enum { R_STR = 0, R_TUP, R_CODE, R_WARM, R_COLD, CDS_NREGIONS };
#define CDS_NRANGES (CDS_NREGIONS - 1)     /* range[i] is in region i + 1 */

typedef struct {
    char magic[8];
    uint32_t format_version;
    uint32_t header_size;
    uint8_t fingerprint[32];     /* the interpreter build (cds_format.c) */
    uint64_t preferred_base;     /* address the pointers were laid out for */
    uint64_t file_size;
    uint64_t index_offset;       /* module_count * cds_index_entry */
    uint64_t module_count;
    uint64_t strtab_offset, strtab_size;
    uint64_t reloc_offset, reloc_count;   /* uint64 bitmap words */
    uint64_t fixup_offset, fixup_count;   /* cds_fixup words */
    uint64_t region_offset[CDS_NREGIONS];  /* page-aligned, in this order */
    uint64_t region_size[CDS_NREGIONS];
    uint64_t seed_size;          /* start-up strings at the start of R_STR */
    uint64_t seed_checksum;      /* of those seed_size bytes */
    int64_t optimize;            /* sys.flags.optimize of the dump */
    uint64_t index_checksum;     /* of index and string table */
    uint64_t header_checksum;    /* of this header, with this field and
                                    'complete' zero */
    uint64_t complete;           /* CDS_COMPLETE, written last */
} cds_header;

/* KIND_REGEX: the program of a regular expression (cds_regex.c);
   KIND_STRING: the code of a string exec() or eval() ran (cds_exec.c) */
enum { KIND_SOURCE = 1, KIND_FROZEN = 2, KIND_REGEX = 3, KIND_STRING = 4 };

typedef struct {
    uint32_t kind;
    uint32_t name_len;
    uint64_t name_off;           /* in the string table */
    uint64_t path_off;           /* source path, in the string table */
    uint64_t path_len;           /* 0 for frozen modules */
    int64_t mtime_ns;            /* of the source file at dump time */
    int64_t size;
    uint64_t source_hash;        /* of the source's bytes, as a hash-based
                                    .pyc has it (cds_stale.c); 0 if frozen */
    int64_t pyc_mtime_ns;        /* the source's .pyc after the dump, */
    int64_t pyc_size;            /* or 0, 0: none (cds_stale.c) */
    uint64_t code;               /* file offset of the module's code object */
    uint64_t range[CDS_NRANGES][2];  /* file offsets of its objects: start,
                                        end in regions R_TUP .. R_COLD */
    uint64_t reloc_start, reloc_count;   /* its bitmap words (below) */
    uint64_t fixup_start, fixup_count;   /* indexes into the fixups */
    uint64_t checksum;           /* of its objects, fixups, shared strings */
    uint64_t reloc_checksum;     /* of its relocations, read only if it must
                                    be relocated */
} cds_index_entry;

/* The relocations of a module are a bitmap of its pointer slots, one run
   of bits per range, in range order, each run starting on a word of the
   bitmap: bit i of the run of a range that starts at file offset 'start'
   marks the 8-byte word at (start & ~7) + 8 i (ranges need not start on
   8 bytes: the objects in them start on CDS_ALIGN).  A slot holds either
   an address in the archive laid out for preferred_base (moved by the
   archive's displacement) or one in the interpreter image (moved with the
   image); its value says which. */
static inline uint64_t
_PyCDS_RangeRelocWords(uint64_t start, uint64_t end)
{
    return ((end - (start & ~(uint64_t)7)) / 8 + 63) / 64;
}

static inline uint64_t
_PyCDS_RelocWords(const uint64_t range[][2])
{
    uint64_t n = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        n += _PyCDS_RangeRelocWords(range[r][0], range[r][1]);
    }
    return n;
}

enum {
    FIXUP_INTERN = 1,     /* slot -> archived str: intern it */
    FIXUP_FROZENSET = 2,  /* slot -> archived tuple: replace by a frozenset */
    FIXUP_CODE = 3,       /* offset of a code object: per-process init */
};

/* A fixup is a uint64: (file offset of an 8-aligned slot or object) | kind */
typedef uint64_t cds_fixup;
#define CDS_FIXUP_OFFSET(f) ((f) & ~(uint64_t)7)
#define CDS_FIXUP_KIND(f) ((f) & 7)

/* The code objects SHARE serves as heap copies (cds_share.c) and whose
   archived originals therefore get no FIXUP_CODE (cds_builder.c): the
   module's own and the class bodies it runs at import.  A class body is a
   code object without CO_NEWLOCALS among the constants of the module or
   of another such class body. */
static inline int
_PyCDS_IsClassBody(PyObject *op)
{
    return PyCode_Check(op)
           && !(((PyCodeObject *)op)->co_flags & CO_NEWLOCALS);
}

/* Whether the file range [off, off + len) lies in one of the module's
   ranges (without overflow, whatever the file holds); the code range
   first: most records are there. */
static inline int
_PyCDS_InModule(const cds_index_entry *e, uint64_t off, uint64_t len)
{
    static const int order[CDS_NRANGES] = {
        R_CODE - 1, R_TUP - 1, R_WARM - 1, R_COLD - 1};
    for (int i = 0; i < CDS_NRANGES; i++) {
        const uint64_t *range = e->range[order[i]];
        if (off >= range[0] && off <= range[1] && len <= range[1] - off) {
            return 1;
        }
    }
    return 0;
}

/* --- checksums (cds_format.c) ------------------------------------------- */

#define CDS_CK_P1 0x9E3779B185EBCA87ULL
#define CDS_CK_P2 0xC2B2AE3D27D4EB4FULL

static inline uint64_t
_PyCDS_Rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

extern uint64_t _PyCDS_Checksum(uint64_t h, const void *data, size_t len);
/* 'letter' then 'h' in 16 hex digits: the index name of an entry of a
   regular expression or a string. */
extern void _PyCDS_HashName(char letter, uint64_t h, char name[24]);
/* The same in steps: the state after some 32-byte blocks; SumCopy() also
   copies them to 'dst' unless it is NULL; SumFinal() takes the last 'n'
   bytes (under 32) and the total length. */
typedef struct {
    uint64_t a[4], b[4];
} _PyCDS_Sum;
extern void _PyCDS_SumInit(_PyCDS_Sum *s, uint64_t h);
extern void _PyCDS_SumCopy(_PyCDS_Sum *s, void *dst, const void *src,
                           size_t blocks);
extern uint64_t _PyCDS_SumFinal(_PyCDS_Sum *s, void *dst, const void *src,
                                size_t n, uint64_t len);

/* What a module's checksum covers of a shared string it interns: its
   length, kind and characters (its hash and state are per-process).
   Inline: it runs once per distinct string of every module prepared. */
static inline uint64_t
_PyCDS_StringDigest(uint64_t h, const PyASCIIObject *s)
{
    uint64_t head = (uint64_t)s->state.kind | ((uint64_t)s->state.ascii << 8);
    const char *data = (const char *)s + (s->state.ascii
                                          ? sizeof(PyASCIIObject)
                                          : sizeof(PyCompactUnicodeObject));
    /* identifiers are short: 8-byte words, then the tail with the length,
       each mixed in; cheaper than _PyCDS_Checksum() for a few bytes */
    const unsigned char *p = (const unsigned char *)data;
    size_t len = (size_t)s->length * s->state.kind, n = len;
    uint64_t x = _PyCDS_Rotl64(h ^ head, 17) * CDS_CK_P1;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        x = _PyCDS_Rotl64(x ^ w, 29) * CDS_CK_P2;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < n; i++) {
        tail |= (uint64_t)p[i] << (8 * i);
    }
    x = _PyCDS_Rotl64(x ^ tail ^ ((uint64_t)len << 56), 29) * CDS_CK_P2;
    return x ^ (x >> 31);
}

/* --- the interpreter image an archive is tied to (cds_format.c) --------- */

typedef struct {
    int found;
    uintptr_t bias;              /* load address (0 for a non-PIE binary) */
    uintptr_t lo, hi;            /* bounds of its loaded segments */
    uint8_t build_id[64];
    size_t build_id_len;
} _PyCDS_Image;

/* The image holding the runtime, located on first use ('found' is 0 if it
   cannot be). */
extern const _PyCDS_Image *_PyCDS_GetImage(void);
/* 32 bytes that change whenever the interpreter binary changes. */
extern void _PyCDS_Fingerprint(uint8_t out[32]);

/* Whether 'op' is a static object of the interpreter image (None, small
   ints, static strings, types): archived as a pointer into the image. */
static inline int
_PyCDS_IsStaticObject(const _PyCDS_Image *image, PyObject *op)
{
    return (uintptr_t)op >= image->lo && (uintptr_t)op < image->hi;
}

#endif /* !Py_CDS_FORMAT_H */
