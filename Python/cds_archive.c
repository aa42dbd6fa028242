/* pycds: the code-object archive -- DUMP writes it, SHARE maps it.
 *
 * The archive holds code objects and the constants they reference in their
 * final in-memory form: object headers, inline data and pointers, laid out
 * for a preferred mapping address.  Every object is immortal in the file
 * itself and archived tuples are never GC-tracked, so refcounting and the
 * GC never write to the mapping.  The format is specified in
 * Doc/library/cds-format.rst; in short:
 *
 *   header page | module index | string table | relocations | fixups |
 *   object regions, grouped by what writes to them (see R_STR below)
 *
 * Each module's objects are its own, but for interned strings, which all
 * modules share (one copy per archive), so a process prepares only the
 * modules it imports, when it imports them: verify the module's checksum
 * (which covers the shared strings it uses), relocate its pointers if the
 * archive or the interpreter image moved, intern its identifiers, build its
 * frozensets, and announce its code objects.  Archive-wide work at start-up
 * is the header and index validation only.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_code.h"          // _PyCode_CODE()
#include "pycore_gc.h"            // PyGC_Head
#include "pycore_global_objects.h" // _Py_INTERP_CACHED_OBJECT()
#include "pycore_long.h"          // _PyLong_DigitCount()
#include "pycore_object.h"        // _PyObject_VAR_SIZE()
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "pycore_runtime.h"       // _PyRuntime
#include "marshal.h"              // PyMarshal_WriteObjectToString()

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>                 // dl_iterate_phdr()
#include <signal.h>               // sigaction()
#include <time.h>                 // clock_gettime()
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if SIZEOF_VOID_P != 8 || defined(Py_GIL_DISABLED) || defined(Py_TRACE_REFS)
#  define CDS_SUPPORTED 0
#else
#  define CDS_SUPPORTED 1
#endif

extern void _PyCode_InitArchived(PyCodeObject *co);
extern PyObject *_PyUnicode_InternArchived(PyInterpreterState *, PyObject *);

/* --- the file format --------------------------------------------------- */

#define CDS_MAGIC "PYCDS\r\n\x1a"
#define CDS_FORMAT_VERSION 2
#define CDS_COMPLETE 0x45544c504d4f43ULL     /* "COMPLETE"-ish marker */
#define CDS_PAGE 4096
/* Where DUMP lays the archive out and SHARE tries to map it: far from the
   heap, the stack, the executable and the shared libraries. */
#define CDS_PREFERRED_BASE ((uint64_t)0x200000000000ULL)

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
/* DUMP only: the start-up strings, written first in R_STR (see below) */
#define R_SEED CDS_NREGIONS

typedef struct {
    char magic[8];
    uint32_t format_version;
    uint32_t header_size;
    uint8_t fingerprint[32];     /* the interpreter build (see fingerprint()) */
    uint64_t preferred_base;     /* address the pointers were laid out for */
    uint64_t file_size;
    uint64_t index_offset;       /* module_count * cds_index_entry */
    uint64_t module_count;
    uint64_t strtab_offset, strtab_size;
    uint64_t reloc_offset, reloc_count;   /* uint64 records */
    uint64_t fixup_offset, fixup_count;   /* cds_fixup records */
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

enum { KIND_SOURCE = 1, KIND_FROZEN = 2 };

typedef struct {
    uint32_t kind;
    uint32_t name_len;
    uint64_t name_off;           /* in the string table */
    uint64_t path_off;           /* source path, in the string table */
    uint64_t path_len;           /* 0 for frozen modules */
    int64_t mtime_ns;            /* of the source file at dump time */
    int64_t size;
    uint64_t code;               /* file offset of the module's code object */
    uint64_t range[CDS_NRANGES][2];  /* file offsets of its objects: start,
                                        end in regions R_TUP .. R_COLD */
    uint64_t reloc_start, reloc_count;   /* indexes into the relocations */
    uint64_t fixup_start, fixup_count;   /* indexes into the fixups */
    uint64_t checksum;           /* of its objects, fixups, shared strings */
    uint64_t reloc_checksum;     /* of its relocations, read only if it must
                                    be relocated */
} cds_index_entry;

/* A relocation is a uint64: (file offset of a pointer slot) | target,
   target RELOC_ARCHIVE (add the archive's displacement) or RELOC_IMAGE
   (add the interpreter image's load address). */
#define RELOC_ARCHIVE 0
#define RELOC_IMAGE 1

enum {
    FIXUP_INTERN = 1,     /* slot -> archived str: intern it */
    FIXUP_FROZENSET = 2,  /* slot -> archived tuple: replace by a frozenset */
    FIXUP_CODE = 3,       /* offset of a code object: per-process init */
};

typedef struct {
    uint64_t offset;
    uint64_t kind;
} cds_fixup;

/* --- build identity and checksums ------------------------------------- */

typedef struct {
    int found;
    uintptr_t bias;              /* load address (0 for a non-PIE binary) */
    uintptr_t lo, hi;            /* bounds of its loaded segments */
    uint8_t build_id[64];
    size_t build_id_len;
} image_info;

static image_info image;

static int
find_image_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    uintptr_t target = (uintptr_t)&_PyRuntime;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    int contains = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) {
            continue;
        }
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        uintptr_t end = start + ph->p_memsz;
        if (start < lo) lo = start;
        if (end > hi) hi = end;
        if (target >= start && target < end) {
            contains = 1;
        }
    }
    if (!contains) {
        return 0;
    }
    image.found = 1;
    image.bias = info->dlpi_addr;
    image.lo = lo;
    image.hi = hi;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) {
            continue;
        }
        const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr);
        const char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const char *name = p + sizeof(ElfW(Nhdr));
            const char *desc = name + ((nh->n_namesz + 3) & ~3u);
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4
                && memcmp(name, "GNU", 4) == 0
                && nh->n_descsz <= sizeof(image.build_id))
            {
                memcpy(image.build_id, desc, nh->n_descsz);
                image.build_id_len = nh->n_descsz;
            }
            p = desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
    return 1;
}

static void
find_image(void)
{
    if (!image.found) {
        dl_iterate_phdr(find_image_cb, NULL);
    }
}

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

#define CK_P1 0x9E3779B185EBCA87ULL
#define CK_P2 0xC2B2AE3D27D4EB4FULL

/* A fast 64-bit checksum: four lanes of Fletcher-style sums over 64-bit
   words (a += w; b += a: two additions per word, which the CPU overlaps),
   the tail zero-padded to a 32-byte block, then the lanes and the length
   mixed.  It detects damage (any single flipped bit, reordered words),
   not tampering. */
static uint64_t
checksum(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t a0 = h, a1 = h ^ CK_P1, a2 = h ^ CK_P2, a3 = ~h;
    uint64_t b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    uint64_t w[4];
    size_t n = len;
    for (; n > 32; p += 32, n -= 32) {
        memcpy(w, p, 32);
        a0 += w[0]; b0 += a0;
        a1 += w[1]; b1 += a1;
        a2 += w[2]; b2 += a2;
        a3 += w[3]; b3 += a3;
    }
    /* the last block, 0 to 32 bytes, zero-padded */
    memset(w, 0, sizeof(w));
    memcpy(w, p, n);
    a0 += w[0]; b0 += a0;
    a1 += w[1]; b1 += a1;
    a2 += w[2]; b2 += a2;
    a3 += w[3]; b3 += a3;
    uint64_t x = (uint64_t)len * CK_P1;
    x = rotl64(x ^ (a0 + rotl64(b0, 23)), 31) * CK_P2;
    x = rotl64(x ^ (a1 + rotl64(b1, 23)), 31) * CK_P2;
    x = rotl64(x ^ (a2 + rotl64(b2, 23)), 31) * CK_P2;
    x = rotl64(x ^ (a3 + rotl64(b3, 23)), 31) * CK_P2;
    x ^= x >> 33;
    x *= CK_P1;
    x ^= x >> 29;
    return x;
}

/* What a module's checksum covers of a shared string it interns: its
   length, kind and characters (its hash and state are per-process). */
static uint64_t
string_digest(uint64_t h, const PyASCIIObject *s)
{
    uint64_t head = (uint64_t)s->state.kind | ((uint64_t)s->state.ascii << 8);
    const char *data = (const char *)s + (s->state.ascii
                                          ? sizeof(PyASCIIObject)
                                          : sizeof(PyCompactUnicodeObject));
    /* identifiers are short: 8-byte words, then the tail with the length,
       each mixed in; cheaper than checksum() for a few bytes */
    const unsigned char *p = (const unsigned char *)data;
    size_t len = (size_t)s->length * s->state.kind, n = len;
    uint64_t x = rotl64(h ^ head, 17) * CK_P1;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        x = rotl64(x ^ w, 29) * CK_P2;
    }
    uint64_t tail = 0;
    for (size_t i = 0; i < n; i++) {
        tail |= (uint64_t)p[i] << (8 * i);
    }
    x = rotl64(x ^ tail ^ ((uint64_t)len << 56), 29) * CK_P2;
    return x ^ (x >> 31);
}

/* 32 bytes that change whenever the interpreter binary changes: the ELF
   build ID of the image holding the runtime, plus the version, build
   information and the layouts the archive depends on. */
static void
fingerprint(uint8_t out[32])
{
    find_image();
    char info[1024];
    snprintf(info, sizeof(info), "%s|%s|%s|%d|%zu|%zu|%zu|%zu|%zu",
             Py_GetVersion(), Py_GetBuildInfo(), Py_GetCompiler(),
             CDS_FORMAT_VERSION, sizeof(PyCodeObject), sizeof(PyASCIIObject),
             sizeof(PyCompactUnicodeObject), sizeof(PyGC_Head),
             (size_t)(image.hi - image.lo));
    for (int i = 0; i < 4; i++) {
        uint64_t h = checksum((uint64_t)i, image.build_id, image.build_id_len);
        h = checksum(h, info, strlen(info));
        memcpy(out + 8 * i, &h, 8);
    }
}

static int
is_static_object(PyObject *op)
{
    return (uintptr_t)op >= image.lo && (uintptr_t)op < image.hi;
}

/* ======================================================================
 * DUMP
 * ====================================================================== */

typedef struct {
    char *data;
    size_t len, cap;
} buffer;

static int
buf_reserve(buffer *b, size_t extra)
{
    if (b->len + extra <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) {
        cap *= 2;
    }
    char *data = PyMem_RawRealloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(data + b->cap, 0, cap - b->cap);
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Allocate 'size' zeroed bytes aligned to 16; returns the offset or -1. */
static Py_ssize_t
buf_alloc(buffer *b, size_t size)
{
    size_t start = (b->len + 15) & ~(size_t)15;
    if (buf_reserve(b, start - b->len + size) < 0) {
        return -1;
    }
    memset(b->data + b->len, 0, start - b->len + size);
    b->len = start + size;
    return (Py_ssize_t)start;
}

static int
buf_append(buffer *b, const void *data, size_t size)
{
    if (buf_reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, data, size);
    b->len += size;
    return 0;
}


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

static int
slots_add(slot_vec *v, slot_rec rec)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        slot_rec *items = PyMem_RawRealloc(v->items, cap * sizeof(slot_rec));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = rec;
    return 0;
}

typedef struct {
    uint32_t kind;
    PyObject *name;      /* str */
    PyObject *path;      /* bytes (file system encoding) or NULL */
    int64_t mtime_ns, size;
    uint32_t code_region;
    uint64_t code;
    uint64_t start[CDS_NREGIONS], end[CDS_NREGIONS];
    size_t ptr_start, ptr_end;       /* in writer.ptrs */
    size_t fix_start, fix_end;       /* in writer.fixups */
} module_rec;

typedef struct {
    buffer region[CDS_NREGIONS + 1];    /* and R_SEED */
    PyObject *strings;    /* interned str -> (offset << 3) | region, one
                             per archive, in R_STR or R_SEED */
    PyObject *startup;    /* set of the start-up strings, or NULL */
    slot_vec ptrs;        /* pointer slots (relocations) */
    slot_vec fixups;      /* fixups, in the order they must run */
    slot_vec mod_interns, mod_frozensets, mod_codes;   /* per module */
    module_rec *modules;
    size_t nmodules, capmodules;
    PyObject *memo;       /* id(obj) -> (region, offset), per module */
    PyObject *keep;       /* objects made while dumping, kept alive */
    Py_ssize_t objects;
    uint32_t code_versions;   /* code objects given a co_version so far */
    const char *skip_reason;
} writer;

static int write_object(writer *w, PyObject *op, uint32_t *region,
                        uint64_t *offset);

static int
needs_fixup(PyObject *op)
{
    if (is_static_object(op)) {
        return 0;
    }
    if (PyFrozenSet_CheckExact(op)) {
        return 1;
    }
    return PyUnicode_CheckExact(op) && PyUnicode_CHECK_INTERNED(op);
}

/* Make the object at (region, offset) immortal and point its type at the
   interpreter image. */
static int
init_header(writer *w, uint32_t region, uint64_t offset, PyObject *op)
{
    PyObject *copy = (PyObject *)(w->region[region].data + offset);
    copy->ob_refcnt = _Py_IMMORTAL_REFCNT;
    copy->ob_type = (PyTypeObject *)((uintptr_t)Py_TYPE(op) - image.bias);
    w->objects++;
    if (region == R_STR || region == R_SEED) {
        /* shared by modules: the loader sets the type of each string when
           it interns it, instead of a relocation record */
        return 0;
    }
    slot_rec rec = {region, RELOC_IMAGE, offset + offsetof(PyObject, ob_type),
                    0, 0};
    return slots_add(&w->ptrs, rec);
}

/* Frozensets are archived as a tuple of their items in a deterministic
   order (by marshal representation), rebuilt at load time: their hash
   table depends on the process's hash seed. */
static PyObject *
frozenset_items(PyObject *fs)
{
    PyObject *items = PySequence_List(fs);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *keyed = PyList_New(n);
    if (keyed == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *key = PyMarshal_WriteObjectToString(item, Py_MARSHAL_VERSION);
        if (key == NULL) {
            Py_DECREF(items);
            Py_DECREF(keyed);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, key, item);
        Py_DECREF(key);
        if (pair == NULL) {
            Py_DECREF(items);
            Py_DECREF(keyed);
            return NULL;
        }
        PyList_SET_ITEM(keyed, i, pair);
    }
    Py_DECREF(items);
    if (PyList_Sort(keyed) < 0) {
        Py_DECREF(keyed);
        return NULL;
    }
    PyObject *result = PyTuple_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(PyList_GET_ITEM(keyed, i), 1);
            PyTuple_SET_ITEM(result, i, Py_NewRef(item));
        }
    }
    Py_DECREF(keyed);
    return result;
}

/* Fill the pointer slot at (region, offset) with a reference to 'target',
   archiving the target first if needed. */
static int
put_ref(writer *w, uint32_t region, uint64_t offset, PyObject *target)
{
    if (target == NULL) {
        return 0;    /* a NULL slot stays zero */
    }
    uint64_t *slot = (uint64_t *)(w->region[region].data + offset);
    if (is_static_object(target)) {
        *slot = (uint64_t)((uintptr_t)target - image.bias);
        slot_rec rec = {region, RELOC_IMAGE, offset, 0, 0};
        return slots_add(&w->ptrs, rec);
    }
    int fixup = 0;
    PyObject *archived = target;
    if (PyFrozenSet_CheckExact(target)) {
        archived = frozenset_items(target);
        if (archived == NULL) {
            return -1;
        }
        int err = PyList_Append(w->keep, archived);
        Py_DECREF(archived);
        if (err < 0) {
            return -1;
        }
        fixup = FIXUP_FROZENSET;
    }
    else if (PyUnicode_CheckExact(target) && PyUnicode_CHECK_INTERNED(target)) {
        fixup = FIXUP_INTERN;
    }
    uint32_t tregion;
    uint64_t toffset;
    if (write_object(w, archived, &tregion, &toffset) < 0) {
        return -1;
    }
    /* write_object() may have grown (moved) the buffer: no 'slot' here */
    slot_rec rec = {region, RELOC_ARCHIVE, offset, tregion, toffset};
    if (slots_add(&w->ptrs, rec) < 0) {
        return -1;
    }
    if (fixup == FIXUP_INTERN) {
        slot_rec f = {region, FIXUP_INTERN, offset, tregion, toffset};
        return slots_add(&w->mod_interns, f);
    }
    if (fixup == FIXUP_FROZENSET) {
        slot_rec f = {region, FIXUP_FROZENSET, offset, 0, 0};
        return slots_add(&w->mod_frozensets, f);
    }
    return 0;
}

static int
memo_get(writer *w, PyObject *op, uint32_t *region, uint64_t *offset)
{
    PyObject *key = PyLong_FromVoidPtr(op);
    if (key == NULL) {
        return -1;
    }
    PyObject *value;
    int found = PyDict_GetItemRef(w->memo, key, &value);
    Py_DECREF(key);
    if (found > 0) {
        unsigned long long v = PyLong_AsUnsignedLongLong(value);
        Py_DECREF(value);
        *region = (uint32_t)(v & 7);
        *offset = v >> 3;
    }
    return found;
}

static int
memo_put(writer *w, PyObject *op, uint32_t region, uint64_t offset)
{
    PyObject *key = PyLong_FromVoidPtr(op);
    PyObject *value = PyLong_FromUnsignedLongLong((offset << 3) | region);
    int err = (key == NULL || value == NULL) ? -1
              : PyDict_SetItem(w->memo, key, value);
    Py_XDECREF(key);
    Py_XDECREF(value);
    return err;
}

/* Copy 'size' bytes of 'op' into a new object in 'region'. */
static Py_ssize_t
copy_object(writer *w, uint32_t region, PyObject *op, const void *src,
            size_t size, size_t prefix)
{
    Py_ssize_t at = buf_alloc(&w->region[region], prefix + size);
    if (at < 0) {
        return -1;
    }
    uint64_t offset = (uint64_t)at + prefix;
    memcpy(w->region[region].data + offset, src, size);
    if (memo_put(w, op, region, offset) < 0
        || init_header(w, region, offset, op) < 0)
    {
        return -1;
    }
    return (Py_ssize_t)offset;
}

static int
write_object(writer *w, PyObject *op, uint32_t *region, uint64_t *offset)
{
    int found = memo_get(w, op, region, offset);
    if (found != 0) {
        return found < 0 ? -1 : 0;
    }
    Py_ssize_t at;
    if (PyUnicode_CheckExact(op) && PyUnicode_CHECK_INTERNED(op)) {
        PyObject *known = PyDict_GetItemWithError(w->strings, op);
        if (known != NULL) {
            unsigned long long v = PyLong_AsUnsignedLongLong(known);
            *region = (uint32_t)(v & 7);
            *offset = v >> 3;
            return memo_put(w, op, *region, *offset);
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (PyUnicode_CheckExact(op)) {
        size_t header = PyUnicode_IS_ASCII(op) ? sizeof(PyASCIIObject)
                                               : sizeof(PyCompactUnicodeObject);
        size_t size = header + (PyUnicode_GET_LENGTH(op) + 1)
                               * PyUnicode_KIND(op);
        /* never cold: hashing caches the hash in the string (and
           unicode-keyed dicts rely on it), interning writes its state, and
           PyUnicode_AsUTF8() caches a pointer in a non-ASCII one */
        *region = R_WARM;
        if (PyUnicode_CHECK_INTERNED(op)) {
            int startup = w->startup ? PySet_Contains(w->startup, op) : 0;
            if (startup < 0) {
                return -1;
            }
            *region = startup ? R_SEED : R_STR;
        }
        at = copy_object(w, *region, op, op, size, 0);
        if (at < 0) {
            return -1;
        }
        PyASCIIObject *s = (PyASCIIObject *)(w->region[*region].data + at);
        s->hash = -1;
        /* rebuild the state word: its padding bits are not initialized in
           the live object, and the archive must be reproducible */
        memset((char *)s + offsetof(PyASCIIObject, state), 0,
               sizeof(PyASCIIObject) - offsetof(PyASCIIObject, state));
        s->state.interned = SSTATE_NOT_INTERNED;
        s->state.kind = PyUnicode_KIND(op);
        s->state.compact = 1;
        s->state.ascii = PyUnicode_IS_ASCII(op);
        s->state.statically_allocated = 1;   /* never freed */
        if (!PyUnicode_IS_ASCII(op)) {
            ((PyCompactUnicodeObject *)s)->utf8 = NULL;
            ((PyCompactUnicodeObject *)s)->utf8_length = 0;
        }
        if (*region == R_STR || *region == R_SEED) {
            PyObject *off = PyLong_FromUnsignedLongLong(
                ((unsigned long long)at << 3) | *region);
            if (off == NULL || PyDict_SetItem(w->strings, op, off) < 0) {
                Py_XDECREF(off);
                return -1;
            }
            Py_DECREF(off);
        }
    }
    else if (PyBytes_CheckExact(op)) {
        size_t size = offsetof(PyBytesObject, ob_sval) + PyBytes_GET_SIZE(op) + 1;
        *region = R_COLD;
        at = copy_object(w, *region, op, op, size, 0);
        if (at < 0) {
            return -1;
        }
_Py_COMP_DIAG_PUSH
_Py_COMP_DIAG_IGNORE_DEPR_DECLS
        ((PyBytesObject *)(w->region[*region].data + at))->ob_shash = -1;
_Py_COMP_DIAG_POP
    }
    else if (PyLong_CheckExact(op)) {
        Py_ssize_t ndigits = _PyLong_DigitCount((PyLongObject *)op);
        size_t size = offsetof(PyLongObject, long_value.ob_digit)
                      + sizeof(digit) * (ndigits ? ndigits : 1);
        *region = R_COLD;
        at = copy_object(w, *region, op, op, size, 0);
    }
    else if (PyFloat_CheckExact(op)) {
        *region = R_COLD;
        at = copy_object(w, *region, op, op, sizeof(PyFloatObject), 0);
    }
    else if (PyComplex_CheckExact(op)) {
        *region = R_COLD;
        at = copy_object(w, *region, op, op, sizeof(PyComplexObject), 0);
    }
    else if (PyTuple_CheckExact(op)) {
        Py_ssize_t n = PyTuple_GET_SIZE(op);
        *region = R_COLD;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (needs_fixup(PyTuple_GET_ITEM(op, i))) {
                *region = R_TUP;   /* fixups may write to its slots */
            }
        }
        size_t size = _PyObject_VAR_SIZE(&PyTuple_Type, n);
        /* an untracked PyGC_Head precedes the tuple: zeroed */
        at = copy_object(w, *region, op, op, size, sizeof(PyGC_Head));
        if (at < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t slot = at + offsetof(PyTupleObject, ob_item)
                            + i * sizeof(PyObject *);
            if (put_ref(w, *region, slot, PyTuple_GET_ITEM(op, i)) < 0) {
                return -1;
            }
        }
    }
    else if (PyCode_Check(op)) {
        PyCodeObject *co = (PyCodeObject *)op;
        size_t size = _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co));
        /* copy only the bytes in use: the allocation's tail is garbage */
        size_t used = offsetof(PyCodeObject, co_code_adaptive)
                      + Py_SIZE(co) * sizeof(_Py_CODEUNIT);
        *region = R_CODE;
        at = copy_object(w, *region, op, op, used, 0);
        if (at < 0 || buf_reserve(&w->region[*region], size - used) < 0) {
            return -1;
        }
        memset(w->region[*region].data + at + used, 0, size - used);
        w->region[*region].len = at + size;
        PyCodeObject *copy = (PyCodeObject *)(w->region[*region].data + at);
        /* the padding after _co_firsttraceable is not initialized */
        size_t hole = offsetof(PyCodeObject, _co_firsttraceable) + sizeof(int);
        memset((char *)copy + hole, 0, offsetof(PyCodeObject, co_extra) - hole);
        /* per-process state, set lazily; the version is unique in the
           archive and above any new code object's (see init_code()) */
        if (w->code_versions >= UINT32_MAX - _PyCDS_CODE_VERSION_BASE) {
            w->skip_reason = "too many code objects";
            PyErr_SetString(PyExc_OverflowError, "too many code objects");
            return -1;
        }
        copy->co_version = _PyCDS_CODE_VERSION_BASE + w->code_versions++;
        copy->co_weakreflist = NULL;
        copy->co_executors = NULL;
        copy->_co_cached = NULL;
        copy->_co_instrumentation_version = 0;
        copy->_co_monitoring = NULL;
        copy->co_extra = NULL;
#define CODE_REF(field) \
        if (put_ref(w, *region, at + offsetof(PyCodeObject, field), \
                    (PyObject *)co->field) < 0) { \
            return -1; \
        }
        CODE_REF(co_consts)
        CODE_REF(co_names)
        CODE_REF(co_exceptiontable)
        CODE_REF(co_localsplusnames)
        CODE_REF(co_localspluskinds)
        CODE_REF(co_filename)
        CODE_REF(co_name)
        CODE_REF(co_qualname)
        CODE_REF(co_linetable)
#undef CODE_REF
        slot_rec f = {*region, FIXUP_CODE, (uint64_t)at, 0, 0};
        if (slots_add(&w->mod_codes, f) < 0) {
            return -1;
        }
    }
    else {
        w->skip_reason = Py_TYPE(op)->tp_name;
        PyErr_Format(PyExc_TypeError, "a constant of type %s cannot be archived",
                     Py_TYPE(op)->tp_name);
        return -1;
    }
    if (at < 0) {
        return -1;
    }
    *offset = (uint64_t)at;
    return 0;
}

static int
compare_intern_fixups(const void *a, const void *b)
{
    const slot_rec *x = a, *y = b;
    /* by target string, then by slot: deterministic */
    if (x->target_region != y->target_region) {
        return x->target_region < y->target_region ? -1 : 1;
    }
    if (x->target != y->target) {
        return x->target < y->target ? -1 : 1;
    }
    if (x->region != y->region) {
        return x->region < y->region ? -1 : 1;
    }
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

/* The code objects SHARE serves as heap copies (see copy_module_code()):
   the module's own and the class bodies it runs at import.  A class body
   is a code object without CO_NEWLOCALS among the constants of the module
   or of another such class body. */
static int
is_class_body(PyObject *op)
{
    return PyCode_Check(op)
           && !(((PyCodeObject *)op)->co_flags & CO_NEWLOCALS);
}

/* Remove the code fixups of the copied code objects: their archived
   originals are never used, so no code watcher hears of them. */
static int
drop_copied_bodies(writer *w, PyCodeObject *co)
{
    uint32_t region;
    uint64_t offset;
    if (memo_get(w, (PyObject *)co, &region, &offset) <= 0) {
        return -1;
    }
    size_t kept = 0;
    for (size_t i = 0; i < w->mod_codes.len; i++) {
        slot_rec *r = &w->mod_codes.items[i];
        if (!(r->region == region && r->offset == offset)) {
            w->mod_codes.items[kept++] = *r;
        }
    }
    w->mod_codes.len = kept;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (is_class_body(c) && drop_copied_bodies(w, (PyCodeObject *)c) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Archive one module's code object; on failure nothing of it remains. */
static int
dump_module(writer *w, uint32_t kind, PyObject *name, PyObject *path,
            const struct stat *st, PyObject *code)
{
    size_t len0[CDS_NREGIONS];
    for (int r = 0; r < CDS_NREGIONS; r++) {
        len0[r] = w->region[r].len;
    }
    size_t ptrs0 = w->ptrs.len, fix0 = w->fixups.len;
    Py_ssize_t objects0 = w->objects;
    uint32_t versions0 = w->code_versions;
    w->mod_interns.len = w->mod_frozensets.len = w->mod_codes.len = 0;
    PyDict_Clear(w->memo);

    /* start each module on a fresh 16-byte boundary */
    uint32_t region;
    uint64_t offset;
    if (write_object(w, code, &region, &offset) < 0) {
        goto error;
    }
    if (PyCode_Check(code) && drop_copied_bodies(w, (PyCodeObject *)code) < 0) {
        goto error;
    }
    /* fixups run in this order: interning, frozensets (whose items may be
       interned strings), then the code objects; interning fixups are
       grouped by string, so that the loader interns each string once */
    qsort(w->mod_interns.items, w->mod_interns.len, sizeof(slot_rec),
          compare_intern_fixups);
    slot_vec *parts[3] = {&w->mod_interns, &w->mod_frozensets, &w->mod_codes};
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < parts[i]->len; j++) {
            if (slots_add(&w->fixups, parts[i]->items[j]) < 0) {
                goto error;
            }
        }
    }
    if (w->nmodules == w->capmodules) {
        size_t cap = w->capmodules ? w->capmodules * 2 : 256;
        module_rec *m = PyMem_RawRealloc(w->modules, cap * sizeof(module_rec));
        if (m == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        w->modules = m;
        w->capmodules = cap;
    }
    module_rec *m = &w->modules[w->nmodules++];
    memset(m, 0, sizeof(*m));
    m->kind = kind;
    m->name = Py_NewRef(name);
    m->path = Py_XNewRef(path);
    if (st != NULL) {
        m->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
        m->size = (int64_t)st->st_size;
    }
    m->code_region = region;
    m->code = offset;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        m->start[r] = len0[r];
        m->end[r] = w->region[r].len;
    }
    m->ptr_start = ptrs0;
    m->ptr_end = w->ptrs.len;
    m->fix_start = fix0;
    m->fix_end = w->fixups.len;
    return 0;

error:
    /* strings it added to R_STR stay: complete objects other modules may
       share */
    for (int r = R_STR + 1; r < CDS_NREGIONS; r++) {
        w->region[r].len = len0[r];
    }
    w->ptrs.len = ptrs0;
    w->fixups.len = fix0;
    w->objects = objects0;
    w->code_versions = versions0;
    return -1;
}

/* --- start-up strings ---------------------------------------------------

   Start-up interns a few thousand strings (builtins' names, methods of the
   built-in types, names of the modules every start-up runs) before any
   module is imported.  An archived identifier equal to one of them could
   not become the canonical string, and every tuple and code object
   referencing it would be written when its module is prepared.  So DUMP
   notes the strings start-up has interned, puts those the archive uses
   first in R_STR (the "seed"), and SHARE interns them as soon as the interpreter can intern,
   before the runtime interns its own copies. */

static PyObject *startup_strings;    /* DUMP: sorted list of str */

static void
note_startup_strings(PyInterpreterState *interp)
{
    if (_PyCDS_GetSettings()->mode != _PyCDS_DUMP
        || !_Py_IsMainInterpreter(interp) || startup_strings != NULL)
    {
        return;
    }
    PyObject *interned = _Py_INTERP_CACHED_OBJECT(interp, interned_strings);
    PyObject *keys = interned ? PyDict_Keys(interned) : NULL;
    if (keys == NULL || PyList_Sort(keys) < 0) {
        Py_XDECREF(keys);
        PyErr_Clear();
        return;
    }
    startup_strings = keys;
}

/* --- finding modules the way a normal import would -------------------- */

/* Return the source path PathFinder finds for 'name' on sys.path (new
   reference), or NULL with *reason set and no exception. */
static PyObject *
find_source(PyObject *machinery, PyObject *name, const char **reason)
{
    PyObject *dot = PyUnicode_FromStringAndSize(".", 1);
    PyObject *parts = dot ? PyUnicode_Split(name, dot, -1) : NULL;
    PyObject *finder = PyObject_GetAttrString(machinery, "PathFinder");
    PyObject *loader_type = PyObject_GetAttrString(machinery, "SourceFileLoader");
    PyObject *search = Py_NewRef(Py_None);
    PyObject *result = NULL;
    if (parts == NULL || finder == NULL || loader_type == NULL) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(parts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *slice = PyList_GetSlice(parts, 0, i + 1);
        PyObject *fullname = slice ? PyUnicode_Join(dot, slice) : NULL;
        Py_XDECREF(slice);
        if (fullname == NULL) {
            goto done;
        }
        PyObject *spec = PyObject_CallMethod(finder, "find_spec", "OO",
                                             fullname, search);
        Py_DECREF(fullname);
        if (spec == NULL) {
            goto done;
        }
        if (spec == Py_None) {
            Py_DECREF(spec);
            *reason = "not found on sys.path";
            goto done;
        }
        if (i < n - 1) {
            Py_SETREF(search, PyObject_GetAttrString(spec, "submodule_search_locations"));
            Py_DECREF(spec);
            if (search == NULL) {
                goto done;
            }
            if (search == Py_None) {
                *reason = "a parent is not a package";
                goto done;
            }
            continue;
        }
        PyObject *loader = PyObject_GetAttrString(spec, "loader");
        if (loader == NULL) {
            Py_DECREF(spec);
            goto done;
        }
        if (loader == Py_None) {
            *reason = "namespace package";
        }
        else if ((PyObject *)Py_TYPE(loader) != loader_type) {
            *reason = "not a source module (extension, bytecode-only or other loader)";
        }
        else {
            result = PyObject_GetAttrString(spec, "origin");
        }
        Py_DECREF(loader);
        Py_DECREF(spec);
    }
done:
    if (PyErr_Occurred()) {
        *reason = "error while searching";
        PyErr_Clear();
        Py_CLEAR(result);
    }
    Py_XDECREF(dot);
    Py_XDECREF(parts);
    Py_XDECREF(finder);
    Py_XDECREF(loader_type);
    Py_XDECREF(search);
    return result;
}

static void
log_skip(PyObject *name, const char *reason)
{
    _PyCDS_Log(1, "dump: skipped %s: %s", PyUnicode_AsUTF8(name), reason);
}

static void
log_skip_exc(PyObject *name)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *msg = exc ? PyObject_Str(exc) : NULL;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    if (text == NULL) {
        PyErr_Clear();
    }
    _PyCDS_Log(1, "dump: skipped %s: %s: %s", PyUnicode_AsUTF8(name),
               exc ? Py_TYPE(exc)->tp_name : "error", text ? text : "?");
    Py_XDECREF(msg);
    Py_XDECREF(exc);
}

static int
dump_source(writer *w, PyObject *machinery, PyObject *name, PyObject *path,
            int *archived, int *skipped)
{
    PyObject *bpath = PyUnicode_EncodeFSDefault(path);
    if (bpath == NULL) {
        return -1;
    }
    /* already archived (found by the search and also listed)? */
    for (size_t i = 0; i < w->nmodules; i++) {
        if (w->modules[i].kind == KIND_SOURCE && w->modules[i].path
            && PyUnicode_Compare(w->modules[i].name, name) == 0
            && strcmp(PyBytes_AS_STRING(w->modules[i].path),
                      PyBytes_AS_STRING(bpath)) == 0)
        {
            Py_DECREF(bpath);
            return 0;
        }
    }
    struct stat st;
    if (stat(PyBytes_AS_STRING(bpath), &st) != 0) {
        log_skip(name, "source file not found");
        (*skipped)++;
        Py_DECREF(bpath);
        return 0;
    }
    PyObject *loader = PyObject_CallMethod(machinery, "SourceFileLoader",
                                           "OO", name, path);
    PyObject *code = loader ? PyObject_CallMethod(loader, "get_code", "O", name)
                            : NULL;
    Py_XDECREF(loader);
    if (code == NULL || !PyCode_Check(code)) {
        if (code == NULL) {
            log_skip_exc(name);
        }
        else {
            log_skip(name, "no code object");
        }
        Py_XDECREF(code);
        (*skipped)++;
        Py_DECREF(bpath);
        return 0;
    }
    w->skip_reason = NULL;
    if (dump_module(w, KIND_SOURCE, name, bpath, &st, code) < 0) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            Py_DECREF(code);
            Py_DECREF(bpath);
            return -1;
        }
        log_skip_exc(name);
        (*skipped)++;
    }
    else {
        (*archived)++;
        _PyCDS_Log(2, "dump: archived %s from %s", PyUnicode_AsUTF8(name),
                   PyBytes_AS_STRING(bpath));
    }
    Py_DECREF(code);
    Py_DECREF(bpath);
    return 0;
}

static int
dump_frozen(writer *w, PyObject *imp, PyObject *name, int *archived,
            int *skipped)
{
    PyObject *res = PyObject_CallMethod(imp, "is_frozen", "O", name);
    if (res == NULL) {
        log_skip_exc(name);
        (*skipped)++;
        return 0;
    }
    int frozen = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (frozen <= 0) {
        PyErr_Clear();
        log_skip(name, "not a frozen module of this interpreter");
        (*skipped)++;
        return 0;
    }
    PyObject *code = PyObject_CallMethod(imp, "get_frozen_object", "O", name);
    if (code == NULL || !PyCode_Check(code)) {
        if (code == NULL) {
            log_skip_exc(name);
        }
        Py_XDECREF(code);
        (*skipped)++;
        return 0;
    }
    if (dump_module(w, KIND_FROZEN, name, NULL, NULL, code) < 0) {
        Py_DECREF(code);
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            return -1;
        }
        log_skip_exc(name);
        (*skipped)++;
        return 0;
    }
    (*archived)++;
    Py_DECREF(code);
    return 0;
}

/* --- writing the file --------------------------------------------------- */

static int
compare_modules(const void *a, const void *b)
{
    const module_rec *x = *(const module_rec * const *)a;
    const module_rec *y = *(const module_rec * const *)b;
    if (x->kind != y->kind) {
        return x->kind < y->kind ? -1 : 1;
    }
    int c = strcmp(PyUnicode_AsUTF8(x->name), PyUnicode_AsUTF8(y->name));
    if (c != 0) {
        return c;
    }
    const char *px = x->path ? PyBytes_AS_STRING(x->path) : "";
    const char *py = y->path ? PyBytes_AS_STRING(y->path) : "";
    return strcmp(px, py);
}

static uint64_t
page_align(uint64_t n)
{
    return (n + CDS_PAGE - 1) & ~(uint64_t)(CDS_PAGE - 1);
}

static int
write_zeros(int fd, uint64_t n)
{
    static const char zeros[CDS_PAGE] = {0};
    while (n > 0) {
        size_t k = n < CDS_PAGE ? (size_t)n : CDS_PAGE;
        if (_PyCDS_WriteAll(fd, zeros, k) < 0) {
            return -1;
        }
        n -= k;
    }
    return 0;
}

/* Lay out and write the archive to 'path' (temporary file + rename). */
static int
write_archive(writer *w, const char *path, uint64_t *total_size)
{
    size_t n = w->nmodules;
    module_rec **order = PyMem_RawMalloc((n ? n : 1) * sizeof(module_rec *));
    cds_index_entry *index = PyMem_RawCalloc(n ? n : 1, sizeof(cds_index_entry));
    buffer strtab = {NULL, 0, 0};
    uint64_t *relocs = PyMem_RawMalloc((w->ptrs.len ? w->ptrs.len : 1) * 8);
    cds_fixup *fixups = PyMem_RawMalloc((w->fixups.len ? w->fixups.len : 1)
                                        * sizeof(cds_fixup));
    char *tmp = NULL;
    int fd = -1, result = -1;
    if (order == NULL || index == NULL || relocs == NULL || fixups == NULL) {
        errno = ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = &w->modules[i];
    }
    qsort(order, n, sizeof(module_rec *), compare_modules);

    /* string table: names and paths, in index order */
    for (size_t i = 0; i < n; i++) {
        module_rec *m = order[i];
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(m->name, &len);
        index[i].kind = m->kind;
        index[i].name_off = strtab.len;
        index[i].name_len = (uint32_t)len;
        if (buf_append(&strtab, s, len + 1) < 0) {
            goto done;
        }
        if (m->path != NULL) {
            index[i].path_off = strtab.len;
            index[i].path_len = PyBytes_GET_SIZE(m->path);
            if (buf_append(&strtab, PyBytes_AS_STRING(m->path),
                           PyBytes_GET_SIZE(m->path) + 1) < 0) {
                goto done;
            }
        }
    }

    cds_header h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, CDS_MAGIC, 8);
    h.format_version = CDS_FORMAT_VERSION;
    h.header_size = sizeof(cds_header);
    fingerprint(h.fingerprint);
    h.preferred_base = CDS_PREFERRED_BASE;
    h.index_offset = CDS_PAGE;
    h.module_count = n;
    h.strtab_offset = h.index_offset + n * sizeof(cds_index_entry);
    h.strtab_size = strtab.len;
    h.reloc_offset = (h.strtab_offset + h.strtab_size + 15) & ~(uint64_t)15;
    h.reloc_count = w->ptrs.len;
    h.fixup_offset = h.reloc_offset + 8 * h.reloc_count;
    h.fixup_count = w->fixups.len;
    /* R_STR is the seed, padded to 16 bytes, then the other strings */
    uint64_t seed_pad = (w->region[R_SEED].len + 15) & ~(uint64_t)15;
    uint64_t at = h.fixup_offset + sizeof(cds_fixup) * h.fixup_count;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        h.region_offset[r] = page_align(at);
        h.region_size[r] = w->region[r].len + (r == R_STR ? seed_pad : 0);
        at = h.region_offset[r] + h.region_size[r];
    }
    h.file_size = page_align(at);
    h.seed_size = w->region[R_SEED].len;
    h.seed_checksum = checksum(0, w->region[R_SEED].data
                                  ? w->region[R_SEED].data : "", h.seed_size);
    h.optimize = _Py_GetConfig()->optimization_level;
    uint64_t region_base[CDS_NREGIONS + 1];
    for (int r = 0; r < CDS_NREGIONS; r++) {
        region_base[r] = h.region_offset[r];
    }
    region_base[R_SEED] = h.region_offset[R_STR];
    region_base[R_STR] += seed_pad;

    /* resolve archive-internal pointers and make the relocation records */
    for (size_t i = 0; i < w->ptrs.len; i++) {
        slot_rec *r = &w->ptrs.items[i];
        uint64_t file_off = region_base[r->region] + r->offset;
        if (r->kind == RELOC_ARCHIVE) {
            uint64_t value = CDS_PREFERRED_BASE + region_base[r->target_region]
                             + r->target;
            memcpy(w->region[r->region].data + r->offset, &value, 8);
        }
        relocs[i] = file_off | r->kind;
    }
    for (size_t i = 0; i < w->fixups.len; i++) {
        slot_rec *r = &w->fixups.items[i];
        fixups[i].offset = region_base[r->region] + r->offset;
        fixups[i].kind = r->kind;
    }

    /* per-module index entries and checksums */
    for (size_t i = 0; i < n; i++) {
        module_rec *m = order[i];
        cds_index_entry *e = &index[i];
        e->mtime_ns = m->mtime_ns;
        e->size = m->size;
        e->code = region_base[m->code_region] + m->code;
        for (int r = 0; r < CDS_NRANGES; r++) {
            e->range[r][0] = h.region_offset[r + 1] + m->start[r + 1];
            e->range[r][1] = h.region_offset[r + 1] + m->end[r + 1];
        }
        e->reloc_start = m->ptr_start;
        e->reloc_count = m->ptr_end - m->ptr_start;
        e->fixup_start = m->fix_start;
        e->fixup_count = m->fix_end - m->fix_start;
        uint64_t c = 0;
        for (int r = 1; r < CDS_NREGIONS; r++) {
            c = checksum(c, w->region[r].data + m->start[r],
                         m->end[r] - m->start[r]);
        }
        e->reloc_checksum = checksum(0, relocs + e->reloc_start,
                                     8 * e->reloc_count);
        c = checksum(c, fixups + e->fixup_start, sizeof(cds_fixup) * e->fixup_count);
        /* and the contents of the shared strings it interns, once per run
           of fixups of the same string */
        const slot_rec *prev = NULL;
        for (size_t k = m->fix_start; k < m->fix_end; k++) {
            slot_rec *r = &w->fixups.items[k];
            if (r->kind == FIXUP_INTERN
                && (prev == NULL || prev->target != r->target
                    || prev->target_region != r->target_region))
            {
                c = string_digest(c, (const PyASCIIObject *)
                                  (w->region[r->target_region].data + r->target));
                prev = r;
            }
        }
        e->checksum = c;
    }
    h.index_checksum = checksum(checksum(0, index, n * sizeof(cds_index_entry)),
                                strtab.data ? strtab.data : "", strtab.len);
    h.header_checksum = checksum(0, &h, sizeof(h));

    /* write: temporary file in the target directory, complete marker last,
       fsync, rename over the target */
    size_t tmplen = strlen(path) + 32;
    tmp = PyMem_RawMalloc(tmplen);
    if (tmp == NULL) {
        errno = ENOMEM;
        goto done;
    }
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto done;
    }
    char page[CDS_PAGE];
    memset(page, 0, sizeof(page));
    memcpy(page, &h, sizeof(h));
    static const char zeros[CDS_PAGE] = {0};
    uint64_t pos;
    if (_PyCDS_WriteAll(fd, page, CDS_PAGE) < 0
        || _PyCDS_WriteAll(fd, index, n * sizeof(cds_index_entry)) < 0
        || _PyCDS_WriteAll(fd, strtab.data ? strtab.data : "", strtab.len) < 0)
    {
        goto done;
    }
    pos = h.strtab_offset + h.strtab_size;
    if (_PyCDS_WriteAll(fd, zeros, h.reloc_offset - pos) < 0
        || _PyCDS_WriteAll(fd, relocs, 8 * h.reloc_count) < 0
        || _PyCDS_WriteAll(fd, fixups, sizeof(cds_fixup) * h.fixup_count) < 0)
    {
        goto done;
    }
    pos = h.fixup_offset + sizeof(cds_fixup) * h.fixup_count;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        if (write_zeros(fd, h.region_offset[r] - pos) < 0) {
            goto done;
        }
        if (r == R_STR
            && (_PyCDS_WriteAll(fd, w->region[R_SEED].data
                                    ? w->region[R_SEED].data : "",
                                h.seed_size) < 0
                || write_zeros(fd, seed_pad - h.seed_size) < 0))
        {
            goto done;
        }
        if (_PyCDS_WriteAll(fd, w->region[r].data ? w->region[r].data : "",
                            w->region[r].len) < 0)
        {
            goto done;
        }
        pos = h.region_offset[r] + h.region_size[r];
    }
    if (write_zeros(fd, h.file_size - pos) < 0) {
        goto done;
    }
    if (fsync(fd) < 0) {
        goto done;
    }
    uint64_t complete = CDS_COMPLETE;
    if (pwrite(fd, &complete, 8, offsetof(cds_header, complete)) != 8
        || fsync(fd) < 0)
    {
        goto done;
    }
    if (close(fd) < 0) {
        fd = -1;
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        goto done;
    }
    /* make the rename durable */
    char *dir = PyMem_RawMalloc(strlen(path) + 2);
    if (dir != NULL) {
        strcpy(dir, path);
        char *slash = strrchr(dir, '/');
        if (slash != NULL) {
            *(slash == dir ? slash + 1 : slash) = '\0';
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                (void)fsync(dfd);
                close(dfd);
            }
        }
        PyMem_RawFree(dir);
    }
    *total_size = h.file_size;
    result = 0;

done:
    if (result < 0) {
        int saved = errno;
        if (fd >= 0) {
            close(fd);
        }
        if (tmp != NULL) {
            unlink(tmp);
        }
        errno = saved;
    }
    PyMem_RawFree(tmp);
    PyMem_RawFree(order);
    PyMem_RawFree(index);
    PyMem_RawFree(strtab.data);
    PyMem_RawFree(relocs);
    PyMem_RawFree(fixups);
    return result;
}

static void
writer_clear(writer *w)
{
    for (size_t i = 0; i < w->nmodules; i++) {
        Py_XDECREF(w->modules[i].name);
        Py_XDECREF(w->modules[i].path);
    }
    PyMem_RawFree(w->modules);
    for (int r = 0; r < CDS_NREGIONS + 1; r++) {
        PyMem_RawFree(w->region[r].data);
    }
    Py_XDECREF(w->strings);
    Py_XDECREF(w->startup);
    PyMem_RawFree(w->ptrs.items);
    PyMem_RawFree(w->fixups.items);
    PyMem_RawFree(w->mod_interns.items);
    PyMem_RawFree(w->mod_frozensets.items);
    PyMem_RawFree(w->mod_codes.items);
    Py_XDECREF(w->memo);
    Py_XDECREF(w->keep);
}

int
_PyCDS_RunDump(void)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (!CDS_SUPPORTED) {
        fprintf(stderr, "cds: dump: code-object archives are not supported "
                        "by this build\n");
        return 1;
    }
    PyTime_t t0 = 0, t1 = 0;
    (void)PyTime_PerfCounterRaw(&t0);
    find_image();

    struct stat st;
    if (stat(s->list_path, &st) != 0) {
        fprintf(stderr, "cds: dump: cannot read module list '%s': %s\n",
                s->list_path, strerror(errno));
        return 1;
    }
    _PyCDS_List list = {NULL, 0, 0};
    char errbuf[512];
    if (_PyCDS_ListRead(s->list_path, &list, errbuf, sizeof(errbuf)) < 0) {
        fprintf(stderr, "cds: dump: %s\n", errbuf);
        _PyCDS_ListClear(&list);
        return 1;
    }

    writer w;
    memset(&w, 0, sizeof(w));
    int status = 1;
    int archived = 0, skipped = 0;
    PyObject *machinery = PyImport_ImportModule("importlib.machinery");
    PyObject *imp = PyImport_ImportModule("_imp");
    w.memo = PyDict_New();
    w.strings = PyDict_New();
    w.keep = PyList_New(0);
    if (machinery == NULL || imp == NULL || w.memo == NULL || w.keep == NULL
        || w.strings == NULL) {
        PyErr_Print();
        goto done;
    }
    if (startup_strings != NULL) {
        w.startup = PySet_New(startup_strings);
        if (w.startup == NULL) {
            PyErr_Print();
            goto done;
        }
    }
    /* Listed frozen modules are archived even if this process runs with
       -X frozen_modules=off (the default of a debug build): their code is
       part of the binary whatever the setting. */
    PyObject *res = PyObject_CallMethod(imp, "_override_frozen_modules_for_tests",
                                        "i", 1);
    if (res == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(res);

    for (Py_ssize_t i = 0; i < list.len; i++) {
        _PyCDS_ListEntry *e = &list.items[i];
        PyObject *name = PyUnicode_FromString(e->name);
        if (name == NULL) {
            PyErr_Print();
            goto done;
        }
        int err = 0;
        if (strcmp(e->kind, "frozen") == 0) {
            err = dump_frozen(&w, imp, name, &archived, &skipped);
        }
        else {
            /* the file a normal import finds now, and the file the traced
               run imported, if that is another one */
            const char *reason = NULL;
            PyObject *found = find_source(machinery, name, &reason);
            if (found != NULL) {
                err = dump_source(&w, machinery, name, found, &archived, &skipped);
            }
            PyObject *listed = PyUnicode_DecodeFSDefault(e->path);
            if (listed == NULL) {
                err = -1;
            }
            else if (found != NULL && PyUnicode_Compare(found, listed) == 0) {
                /* the same file: done */
            }
            else if (err == 0) {
                if (access(e->path, F_OK) == 0) {
                    err = dump_source(&w, machinery, name, listed,
                                      &archived, &skipped);
                }
                else if (found == NULL) {
                    log_skip(name, reason ? reason : "not found");
                    skipped++;
                }
            }
            Py_XDECREF(listed);
            Py_XDECREF(found);
        }
        Py_DECREF(name);
        if (err < 0) {
            PyErr_Print();
            goto done;
        }
    }

    uint64_t size = 0;
    if (write_archive(&w, s->archive_path, &size) < 0) {
        fprintf(stderr, "cds: dump: cannot write archive '%s': %s\n",
                s->archive_path, strerror(errno));
        goto done;
    }
    (void)PyTime_PerfCounterRaw(&t1);
    double secs = PyTime_AsSecondsDouble(t1 - t0);
    fprintf(stderr, "cds: dump: %d modules archived, %d skipped; "
            "%zd objects, %llu bytes, %.2f s -> %s\n",
            archived, skipped, w.objects, (unsigned long long)size, secs,
            s->archive_path);
    status = 0;

done:
    Py_XDECREF(machinery);
    Py_XDECREF(imp);
    writer_clear(&w);
    _PyCDS_ListClear(&list);
    return status;
}

/* ======================================================================
 * SHARE
 * ====================================================================== */

enum { MOD_UNTOUCHED = 0, MOD_READY = 1, MOD_BAD = 2 };

static struct {
    int state;                 /* 0: not opened yet, 1: mapped, -1: unusable */
    char *base;
    size_t size;
    const cds_header *hdr;
    const cds_index_entry *index;
    const char *strtab;
    uint8_t *mod_state;
    intptr_t archive_delta;    /* mapped base - preferred base */
    intptr_t image_delta;      /* image load address (0: not moved) */
    const char *reason;        /* why the archive is not used */
    const char *path;
    int protect;               /* -X cds_protect: cold region read-only */
    int handler_installed;     /* the fault handler of -X cds_protect */
    Py_ssize_t served, stale, missed, rejected, prepared, relocated;
    int64_t open_ns, prepare_ns;   /* time spent opening, preparing */
} cds;

uintptr_t _PyCDS_ReadOnlyStart = 0;
uintptr_t _PyCDS_ReadOnlyEnd = 0;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- -X cds_protect ----------------------------------------------------

   The header, index, relocations, fixups and the cold region are mapped
   read-only; a write to them raises SIGSEGV, and this handler names the
   archive, the file offset and the module, then hands the fault to the
   handler installed before it (faulthandler's, with -X faulthandler, which
   dumps the traceback) or the default action.  It is installed just before
   site runs, after -X faulthandler's; a handler installed later (by
   faulthandler.enable()) sees faults first and, as it chains to this one
   with raise(), without their address: the traceback is all there is. */

static struct sigaction protect_previous;

static size_t
fmt_str(char *buf, size_t at, size_t cap, const char *str)
{
    while (*str && at + 1 < cap) {
        buf[at++] = *str++;
    }
    return at;
}

static size_t
fmt_hex(char *buf, size_t at, size_t cap, uint64_t v)
{
    char digits[19] = "0x";
    int n = 2;
    int shift = 60;
    while (shift > 0 && ((v >> shift) & 0xf) == 0) {
        shift -= 4;
    }
    for (; shift >= 0; shift -= 4) {
        digits[n++] = "0123456789abcdef"[(v >> shift) & 0xf];
    }
    digits[n] = '\0';
    return fmt_str(buf, at, cap, digits);
}

static void
protect_fault(int signum, siginfo_t *info, void *context)
{
    uintptr_t addr = (uintptr_t)info->si_addr;
    if (info->si_code <= 0) {
        /* sent by kill() or raise(): what the previous disposition does */
        sigaction(signum, &protect_previous, NULL);
        raise(signum);
        return;
    }
    if (addr >= (uintptr_t)cds.base && addr < (uintptr_t)cds.base + cds.size) {
        uint64_t off = addr - (uintptr_t)cds.base;
        char msg[1024];
        size_t n = fmt_str(msg, 0, sizeof(msg), "Fatal Python error: cds: "
                           "write to the read-only part of archive '");
        n = fmt_str(msg, n, sizeof(msg), cds.path);
        n = fmt_str(msg, n, sizeof(msg), "' at file offset ");
        n = fmt_hex(msg, n, sizeof(msg), off);
        const cds_header *h = cds.hdr;
        uint64_t cold = h->region_offset[R_COLD];
        if (off >= cold && off < cold + h->region_size[R_COLD]) {
            n = fmt_str(msg, n, sizeof(msg), " (cold region");
            for (uint64_t i = 0; i < h->module_count; i++) {
                const cds_index_entry *e = &cds.index[i];
                if (off >= e->range[R_COLD - 1][0]
                    && off < e->range[R_COLD - 1][1]) {
                    n = fmt_str(msg, n, sizeof(msg), ", an object of module ");
                    n = fmt_str(msg, n, sizeof(msg), cds.strtab + e->name_off);
                    break;
                }
            }
            n = fmt_str(msg, n, sizeof(msg), ")");
        }
        n = fmt_str(msg, n, sizeof(msg), "\n");
        (void)!write(2, msg, n);
    }
    /* the faulting instruction runs again under the previous handler */
    sigaction(signum, &protect_previous, NULL);
}

static void
protect_range(uint64_t start, uint64_t end, int prot)
{
    start &= ~(uint64_t)(CDS_PAGE - 1);
    end = (end + CDS_PAGE - 1) & ~(uint64_t)(CDS_PAGE - 1);
    if (end > start && mprotect(cds.base + start, end - start, prot) < 0) {
        _PyCDS_Log(1, "cannot change the protection of archive pages: %s",
                   strerror(errno));
    }
}

static void
install_fault_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = protect_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &protect_previous) < 0) {
        _PyCDS_Log(1, "cannot install the write-protection handler: %s",
                   strerror(errno));
    }
}

static void
protect_archive(void)
{
    cds.protect = 1;
    /* the header, index, relocations, fixups and the cold region */
    protect_range(0, cds.hdr->region_offset[0], PROT_READ);
    protect_range(cds.hdr->region_offset[R_COLD], cds.size, PROT_READ);
}

static int
unusable(const char *path, const char *reason)
{
    cds.state = -1;
    cds.reason = reason;
    _PyCDS_Log(1, "archive '%s' not used: %s", path, reason);
    return -1;
}

/* The regions follow the fixups in order, page-aligned, within the file. */
static int
regions_ok(const cds_header *h, uint64_t size)
{
    uint64_t at = h->fixup_offset + sizeof(cds_fixup) * h->fixup_count;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        if (h->region_offset[r] < at || h->region_offset[r] % CDS_PAGE != 0
            || h->region_offset[r] > size
            || h->region_size[r] > size - h->region_offset[r])
        {
            return 0;
        }
        at = h->region_offset[r] + h->region_size[r];
    }
    return h->seed_size <= h->region_size[R_STR];
}

static int
open_archive(void)
{
    if (cds.state != 0) {
        return cds.state > 0 ? 0 : -1;
    }
    const char *path = _PyCDS_GetSettings()->archive_path;
    if (!CDS_SUPPORTED) {
        return unusable(path, "not supported by this build");
    }
    find_image();
    if (!image.found) {
        return unusable(path, "cannot locate the interpreter image");
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return unusable(path, errno == ENOENT ? "no such file"
                                              : "cannot open the file");
    }
    struct stat st;
    cds_header h;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return unusable(path, "not a regular file");
    }
    if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        close(fd);
        return unusable(path, "truncated header");
    }
    /* Validate the header before using any of it */
    if (memcmp(h.magic, CDS_MAGIC, 8) != 0) {
        close(fd);
        return unusable(path, "not a pycds archive (bad magic)");
    }
    if (h.format_version != CDS_FORMAT_VERSION
        || h.header_size != sizeof(cds_header))
    {
        close(fd);
        return unusable(path, "unsupported archive format version");
    }
    if (h.complete != CDS_COMPLETE) {
        close(fd);
        return unusable(path, "incomplete archive (the dump did not finish)");
    }
    cds_header copy = h;
    copy.header_checksum = 0;
    copy.complete = 0;
    if (checksum(0, &copy, sizeof(copy)) != h.header_checksum) {
        close(fd);
        return unusable(path, "header checksum mismatch (corrupt archive)");
    }
    uint8_t fp[32];
    fingerprint(fp);
    if (memcmp(fp, h.fingerprint, 32) != 0) {
        close(fd);
        return unusable(path, "made by a different interpreter build");
    }
    if (h.optimize != _Py_GetConfig()->optimization_level) {
        close(fd);
        return unusable(path, "made with a different optimization level (-O)");
    }
    if ((uint64_t)st.st_size != h.file_size) {
        close(fd);
        return unusable(path, "file size does not match the header (truncated?)");
    }
    /* every region within the file, in order, aligned */
    uint64_t size = h.file_size;
    if (h.module_count > size / sizeof(cds_index_entry)
        || h.index_offset != CDS_PAGE
        || h.strtab_offset != h.index_offset + h.module_count * sizeof(cds_index_entry)
        || h.strtab_offset + h.strtab_size > size
        || h.reloc_count > size / 8 || h.fixup_count > size / sizeof(cds_fixup)
        || h.reloc_offset < h.strtab_offset + h.strtab_size
        || h.reloc_offset % 8 != 0
        || h.fixup_offset != h.reloc_offset + 8 * h.reloc_count
        || !regions_ok(&h, size)
        || h.preferred_base % CDS_PAGE != 0)
    {
        close(fd);
        return unusable(path, "inconsistent region offsets (corrupt archive)");
    }

    /* Map the whole file privately, where it was laid out if possible. */
    void *want = (void *)(uintptr_t)h.preferred_base;
    int flags = MAP_PRIVATE;
    if (_PyCDS_GetSettings()->force_relocation) {
        /* -X cds_relocate: let the kernel choose, as when the preferred
           address is taken */
        want = NULL;
    }
#ifdef MAP_FIXED_NOREPLACE
    if (want != NULL) {
        flags |= MAP_FIXED_NOREPLACE;
    }
#endif
    char *base = mmap(want, size, PROT_READ | PROT_WRITE, flags, fd, 0);
#ifdef MAP_FIXED_NOREPLACE
    if (base == MAP_FAILED && errno == EEXIST) {
        base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    }
#endif
    close(fd);
    if (base == MAP_FAILED) {
        return unusable(path, "cannot map the file");
    }
    const cds_index_entry *index = (const cds_index_entry *)(base + h.index_offset);
    if (checksum(checksum(0, index, h.module_count * sizeof(cds_index_entry)),
                 base + h.strtab_offset, h.strtab_size) != h.index_checksum)
    {
        munmap(base, size);
        return unusable(path, "index checksum mismatch (corrupt archive)");
    }
    for (uint64_t i = 0; i < h.module_count; i++) {
        const cds_index_entry *e = &index[i];
        if (e->name_off > h.strtab_size || e->name_len > h.strtab_size - e->name_off
            || e->path_off > h.strtab_size || e->path_len > h.strtab_size - e->path_off
            || (e->kind != KIND_SOURCE && e->kind != KIND_FROZEN))
        {
            munmap(base, size);
            return unusable(path, "bad index entry (corrupt archive)");
        }
    }
    uint8_t *mod_state = PyMem_RawCalloc(h.module_count ? h.module_count : 1, 1);
    if (mod_state == NULL) {
        munmap(base, size);
        return unusable(path, "out of memory");
    }
    cds.base = base;
    cds.size = size;
    cds.hdr = (const cds_header *)base;
    cds.index = index;
    cds.strtab = base + h.strtab_offset;
    cds.mod_state = mod_state;
    cds.archive_delta = (intptr_t)((uintptr_t)base - h.preferred_base);
    cds.image_delta = (intptr_t)image.bias;
    cds.path = path;
    cds.state = 1;
    _PyCDS_ReadOnlyStart = (uintptr_t)base + h.region_offset[R_COLD];
    _PyCDS_ReadOnlyEnd = _PyCDS_ReadOnlyStart + h.region_size[R_COLD];
    if (_PyCDS_GetSettings()->protect) {
        protect_archive();
    }
    _PyCDS_Log(1, "archive '%s' mapped at %p: %llu modules, %llu bytes%s",
               path, base, (unsigned long long)h.module_count,
               (unsigned long long)size,
               (cds.archive_delta || cds.image_delta) ? ", relocated on use" : "");
    return 0;
}

static inline int
in_module(const cds_index_entry *e, uint64_t off, uint64_t len)
{
    /* the code range first: most records are there */
    static const int order[CDS_NRANGES] = {
        R_CODE - 1, R_TUP - 1, R_WARM - 1, R_COLD - 1};
    for (int i = 0; i < CDS_NRANGES; i++) {
        int r = order[i];
        if (off >= e->range[r][0] && off + len <= e->range[r][1]) {
            return 1;
        }
    }
    return 0;
}

/* The shared string at file offset 'off', or NULL if what is there is not
   a well-formed archived string: checked before anything reads it. */
static PyASCIIObject *
shared_string(uint64_t off)
{
    const cds_header *h = cds.hdr;
    uint64_t lo = h->region_offset[R_STR], hi = lo + h->region_size[R_STR];
    if (off < lo || off % 16 != 0 || off + sizeof(PyASCIIObject) > hi) {
        return NULL;
    }
    PyASCIIObject *s = (PyASCIIObject *)(cds.base + off);
    uintptr_t type = (uintptr_t)s->ob_base.ob_type;
    if (!_Py_IsImmortal((PyObject *)s)
        || (type != (uintptr_t)&PyUnicode_Type
            && type != (uintptr_t)&PyUnicode_Type - cds.image_delta)
        || !s->state.compact || !s->state.statically_allocated
        || (s->state.kind != 1 && s->state.kind != 2 && s->state.kind != 4)
        || (s->state.ascii && s->state.kind != 1)
        || s->length < 0 || (uint64_t)s->length > hi - off)
    {
        return NULL;
    }
    size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                   : sizeof(PyCompactUnicodeObject);
    if (off + header + ((uint64_t)s->length + 1) * s->state.kind > hi) {
        return NULL;
    }
    return s;
}

#ifndef MADV_POPULATE_WRITE
#  define MADV_POPULATE_WRITE 23      /* Linux 5.14 */
#endif

/* Relocation writes to every page of a module (each object's type pointer
   moves with the interpreter image), so each page would take a read fault
   for the checksum and then a copy-on-write fault.  Making the module's
   pages private in one call first is cheaper; the contents are unchanged.
   Only a hint: older kernels refuse it and the faults happen as before. */
static void
populate_for_relocation(const cds_index_entry *e)
{
    uintptr_t page = (uintptr_t)CDS_PAGE - 1;
    for (int r = 0; r < CDS_NRANGES; r++) {
        if (e->range[r][0] == e->range[r][1]
            || (cds.protect && r + 1 == R_COLD))   /* mapped read-only */
        {
            continue;
        }
        uintptr_t lo = (uintptr_t)cds.base + e->range[r][0];
        uintptr_t hi = (uintptr_t)cds.base + e->range[r][1];
        lo &= ~page;
        hi = (hi + page) & ~page;
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
    }
}

#ifdef Py_DEBUG
/* In a debug build, as CPython frees its immortal interned strings at
   finalization there so that -X showrefcount can report no leak, what a
   process allocated for archived objects is released when the interpreter
   is cleared (its dict is, after its modules): the frozensets that fixups
   made (the archive's slots borrow them from a list in the interpreter's
   dict) and the caches of co_code etc. that archived code objects made on
   the heap.  A release build keeps both until the process exits. */
static void
release_archived_caches(PyObject *capsule)
{
    if (cds.base == NULL) {
        return;
    }
    const cds_fixup *all = (const cds_fixup *)(cds.base + cds.hdr->fixup_offset);
    for (uint64_t i = 0; i < cds.hdr->module_count; i++) {
        const cds_index_entry *e = &cds.index[i];
        if (cds.mod_state[i] != MOD_READY) {
            continue;
        }
        for (uint64_t k = 0; k < e->fixup_count; k++) {
            const cds_fixup *f = &all[e->fixup_start + k];
            if (f->kind != FIXUP_CODE) {
                continue;
            }
            PyCodeObject *co = (PyCodeObject *)(cds.base + f->offset);
            _PyCoCached *cached = co->_co_cached;
            if (cached != NULL) {
                co->_co_cached = NULL;
                Py_XDECREF(cached->_co_code);
                Py_XDECREF(cached->_co_cellvars);
                Py_XDECREF(cached->_co_freevars);
                Py_XDECREF(cached->_co_varnames);
                PyMem_Free(cached);
            }
        }
    }
}

/* Add 'obj' (or nothing, if NULL) to the list of what is released with
   the interpreter, made with the capsule that releases the caches. */
static int
keep_until_finalization(PyInterpreterState *interp, PyObject *obj)
{
    PyObject *dict = PyInterpreterState_GetDict(interp);      // borrowed
    if (dict == NULL) {
        return -1;
    }
    PyObject *list;
    if (PyDict_GetItemStringRef(dict, "_pycds_fixup_objects", &list) < 0) {
        return -1;
    }
    if (list == NULL) {
        PyObject *capsule = PyCapsule_New((void *)&cds, NULL,
                                          release_archived_caches);
        list = PyList_New(0);
        if (capsule == NULL || list == NULL
            || PyList_Append(list, capsule) < 0
            || PyDict_SetItemString(dict, "_pycds_fixup_objects", list) < 0)
        {
            Py_XDECREF(capsule);
            Py_XDECREF(list);
            return -1;
        }
        Py_DECREF(capsule);
    }
    int r = (obj == NULL) ? 0 : PyList_Append(list, obj);
    Py_DECREF(list);
    return r;
}
#endif

/* Verify, relocate and fix up one module's objects, once per process. */
static int
prepare_module(size_t i)
{
    const cds_index_entry *e = &cds.index[i];
    const cds_header *h = cds.hdr;
    char *base = cds.base;
    const char *name = cds.strtab + e->name_off;
    int64_t t0 = now_ns();
    int result = -1;
    /* bounds of everything the entry points at */
    for (int r = 0; r < CDS_NRANGES; r++) {
        uint64_t lo = h->region_offset[r + 1], hi = lo + h->region_size[r + 1];
        if (e->range[r][0] > e->range[r][1] || e->range[r][0] < lo
            || e->range[r][1] > hi)
        {
            _PyCDS_Log(1, "module %s: bad index entry (corrupt archive)", name);
            goto done;
        }
    }
    if (e->reloc_start > h->reloc_count
        || e->reloc_count > h->reloc_count - e->reloc_start
        || e->fixup_start > h->fixup_count
        || e->fixup_count > h->fixup_count - e->fixup_start
        || !in_module(e, e->code, sizeof(PyCodeObject)))
    {
        _PyCDS_Log(1, "module %s: bad index entry (corrupt archive)", name);
        goto done;
    }
    const uint64_t *relocs = (const uint64_t *)(base + h->reloc_offset) + e->reloc_start;
    const cds_fixup *fixups = (const cds_fixup *)(base + h->fixup_offset) + e->fixup_start;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (!in_module(e, fixups[k].offset, 8) || (fixups[k].offset & 7)
            || fixups[k].kind < FIXUP_INTERN || fixups[k].kind > FIXUP_CODE)
        {
            _PyCDS_Log(1, "module %s: bad fixup (corrupt archive)", name);
            goto done;
        }
    }
    int relocate = (cds.archive_delta != 0 || cds.image_delta != 0);
    if (relocate) {
        populate_for_relocation(e);
    }
    uint64_t c = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        c = checksum(c, base + e->range[r][0], e->range[r][1] - e->range[r][0]);
    }
    c = checksum(c, fixups, sizeof(cds_fixup) * e->fixup_count);
    uint64_t prev_target = UINT64_MAX;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (fixups[k].kind != FIXUP_INTERN) {
            continue;
        }
        /* the slot still holds the address the dump laid out */
        uint64_t target = *(uint64_t *)(base + fixups[k].offset) - h->preferred_base;
        if (target == prev_target) {
            continue;    /* the same string as the fixup before */
        }
        prev_target = target;
        const PyASCIIObject *str = shared_string(target);
        if (str == NULL) {
            _PyCDS_Log(1, "module %s: bad shared string (corrupt archive)", name);
            goto done;
        }
        c = string_digest(c, str);
    }
    if (c != e->checksum) {
        _PyCDS_Log(1, "module %s: checksum mismatch (corrupt archive)", name);
        goto done;
    }
    /* the relocations are read only when something moved */
    if (relocate && checksum(0, relocs, 8 * e->reloc_count) != e->reloc_checksum) {
        _PyCDS_Log(1, "module %s: relocations checksum mismatch "
                   "(corrupt archive)", name);
        goto done;
    }
    /* Relocate only when something moved: otherwise nothing is written.
       Each record is checked before it is applied, and only the records
       of what moved are (usually the image only: each object's type).  A
       bad record leaves the module half relocated, but a module that
       fails here is never used, and its pages are its own. */
    if (relocate) {
        if (cds.protect) {
            protect_range(e->range[R_COLD - 1][0], e->range[R_COLD - 1][1],
                          PROT_READ | PROT_WRITE);
        }
        int bad = 0;
        for (uint64_t k = 0; k < e->reloc_count; k++) {
            uint64_t rec = relocs[k];
            intptr_t delta = (rec & 1) ? cds.image_delta : cds.archive_delta;
            if (delta == 0) {
                continue;
            }
            if ((rec & 6) || !in_module(e, rec & ~(uint64_t)1, 8)) {
                bad = 1;
                break;
            }
            *(uint64_t *)(base + (rec & ~(uint64_t)1)) += (uint64_t)delta;
        }
        if (cds.protect) {
            protect_range(e->range[R_COLD - 1][0], e->range[R_COLD - 1][1],
                          PROT_READ);
        }
        if (bad) {
            _PyCDS_Log(1, "module %s: bad relocation (corrupt archive)", name);
            goto done;
        }
        cds.relocated++;
    }
    PyInterpreterState *interp = _PyInterpreterState_GET();
#ifdef Py_DEBUG
    if (keep_until_finalization(interp, NULL) < 0) {
        PyErr_Clear();
    }
#endif
    PyObject *last_s = NULL, *last_t = NULL;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        PyObject **slot = (PyObject **)(base + fixups[k].offset);
        switch (fixups[k].kind) {
            case FIXUP_INTERN: {
                /* consecutive fixups of the same string: intern it once */
                PyObject *s = *slot;
                if (Py_TYPE(s) != &PyUnicode_Type) {
                    /* the first use of this shared string in the process */
                    Py_SET_TYPE(s, &PyUnicode_Type);
                }
                PyObject *t = (s == last_s) ? last_t
                                            : _PyUnicode_InternArchived(interp, s);
                if (t != s) {
                    *slot = t;   /* owns the reference, never released */
                    if (s == last_s) {
                        Py_INCREF(t);
                    }
                }
                last_s = s;
                last_t = t;
                break;
            }
            case FIXUP_FROZENSET: {
                PyObject *fs = PyFrozenSet_New(*slot);
#ifdef Py_DEBUG
                if (fs != NULL && keep_until_finalization(interp, fs) < 0) {
                    Py_CLEAR(fs);
                }
#endif
                if (fs == NULL) {
                    PyErr_Clear();
                    _PyCDS_Log(1, "module %s: cannot rebuild a frozenset", name);
                    goto done;
                }
                *slot = fs;      /* owns the reference, never released */
#ifdef Py_DEBUG
                Py_DECREF(fs);   /* borrowed: see keep_until_finalization() */
#endif
                break;
            }
            case FIXUP_CODE:
                _PyCode_InitArchived((PyCodeObject *)slot);
                break;
        }
    }
    cds.prepared++;
    result = 0;
done:
    cds.prepare_ns += now_ns() - t0;
    return result;
}

/* A module's own code object and the class bodies it defines run once,
   when the module is imported, and running writes to their bytecode (the
   adaptive interpreter's counters): serve copies on the heap, which are
   freed after the import as the code objects from a .pyc are, and leave the
   archived ones unwritten.  The copies refer to the same archived names,
   tables and other constants; functions' code stays archived. */
static PyObject *
copy_module_code(PyCodeObject *co)
{
    /* the constants, with the class bodies copied */
    PyObject *consts = co->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(consts);
    Py_ssize_t bodies = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        bodies += is_class_body(PyTuple_GET_ITEM(consts, i));
    }
    if (bodies) {
        consts = PyTuple_New(n);
        if (consts == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
            c = is_class_body(c) ? copy_module_code((PyCodeObject *)c)
                                 : Py_NewRef(c);
            if (c == NULL) {
                Py_DECREF(consts);
                return NULL;
            }
            PyTuple_SET_ITEM(consts, i, c);
        }
    }
    else {
        Py_INCREF(consts);
    }
    PyCodeObject *copy = PyObject_NewVar(PyCodeObject, &PyCode_Type,
                                         Py_SIZE(co));
    if (copy == NULL) {
        Py_DECREF(consts);
        return NULL;
    }
    size_t start = offsetof(PyCodeObject, co_consts);
    memcpy((char *)copy + start, (char *)co + start,
           _PyObject_VAR_SIZE(&PyCode_Type, Py_SIZE(co)) - start);
    copy->co_consts = consts;
    Py_INCREF(copy->co_names);
    Py_INCREF(copy->co_exceptiontable);
    Py_INCREF(copy->co_localsplusnames);
    Py_INCREF(copy->co_localspluskinds);
    Py_INCREF(copy->co_filename);
    Py_INCREF(copy->co_name);
    Py_INCREF(copy->co_qualname);
    Py_INCREF(copy->co_linetable);
    _PyCode_InitArchived(copy);
    return (PyObject *)copy;
}

/* Intern the seed: the start-up strings at the start of R_STR. */
static int
intern_seed(PyInterpreterState *interp)
{
    const cds_header *h = cds.hdr;
    uint64_t off = h->region_offset[R_STR];
    uint64_t end = off + h->seed_size;
    if (checksum(0, cds.base + off, h->seed_size) != h->seed_checksum) {
        return unusable(cds.path, "start-up strings checksum mismatch "
                                  "(corrupt archive)");
    }
    Py_ssize_t n = 0;
    while (off < end) {
        PyASCIIObject *s = shared_string(off);
        if (s == NULL) {
            return unusable(cds.path, "bad start-up string (corrupt archive)");
        }
        size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                       : sizeof(PyCompactUnicodeObject);
        off += (header + ((uint64_t)s->length + 1) * s->state.kind + 15)
               & ~(uint64_t)15;
        Py_SET_TYPE((PyObject *)s, &PyUnicode_Type);
        PyObject *t = _PyUnicode_InternArchived(interp, (PyObject *)s);
        if (t != (PyObject *)s) {
            Py_DECREF(t);     /* interned earlier: fixups redirect to it */
        }
        n++;
    }
    _PyCDS_Log(2, "%zd start-up strings interned", n);
    return 0;
}

void
_PyCDS_InitInterp(PyInterpreterState *interp)
{
    if (_PyCDS_GetSettings()->mode != _PyCDS_SHARE
        || !_Py_IsMainInterpreter(interp) || cds.state != 0)
    {
        return;
    }
    int64_t t0 = now_ns();
    if (open_archive() == 0) {
        /* on failure nothing more of the archive is used; the strings
           interned so far are valid, immortal objects */
        (void)intern_seed(interp);
    }
    cds.open_ns = now_ns() - t0;
}

void
_PyCDS_BeforeSite(PyInterpreterState *interp)
{
    if (cds.protect && !cds.handler_installed
        && _Py_IsMainInterpreter(interp))
    {
        install_fault_handler();
        cds.handler_installed = 1;
    }
    note_startup_strings(interp);
}

static int
compare_key(const cds_index_entry *e, uint32_t kind, const char *name,
            size_t len)
{
    if (e->kind != kind) {
        return e->kind < kind ? -1 : 1;
    }
    const char *ename = cds.strtab + e->name_off;
    int c = memcmp(ename, name, e->name_len < len ? e->name_len : len);
    if (c != 0) {
        return c;
    }
    return e->name_len < len ? -1 : (e->name_len > len ? 1 : 0);
}

/* The first index entry with this (kind, name), or where it would be. */
static size_t
first_entry(uint32_t kind, const char *cname, size_t len)
{
    size_t lo = 0, hi = cds.hdr->module_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_key(&cds.index[mid], kind, cname, len) < 0) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

/* Whether the archive holds a usable entry for the source module 'name'
   made from 'path' (any path if 'path' is NULL).  For the finder's fast
   path (cds_finder.c): 0 when no archive is in use.  Never raises. */
int
_PyCDS_ArchiveHasSource(PyObject *name, PyObject *path)
{
    if (!_Py_IsMainInterpreter(_PyInterpreterState_GET())
        || open_archive() < 0)
    {
        return 0;
    }
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (cname == NULL
        || (path != NULL && _PyCDS_EncodePath(path, &bpath, &cpath) < 0))
    {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    for (size_t i = first_entry(KIND_SOURCE, cname, (size_t)len);
         i < cds.hdr->module_count
         && compare_key(&cds.index[i], KIND_SOURCE, cname, (size_t)len) == 0;
         i++)
    {
        const cds_index_entry *e = &cds.index[i];
        if (cds.mod_state[i] != MOD_BAD
            && (cpath == NULL
                || (e->path_len == strlen(cpath)
                    && memcmp(cds.strtab + e->path_off, cpath,
                              e->path_len) == 0)))
        {
            found = 1;
            break;
        }
    }
    Py_XDECREF(bpath);
    return found;
}

PyObject *
_PyCDS_ArchiveLookup(const char *kindname, PyObject *name, PyObject *path)
{
    /* Archived objects are shared by the whole process; subinterpreters
       keep their normal imports. */
    PyInterpreterState *interp = _PyInterpreterState_GET();
    if (!_Py_IsMainInterpreter(interp) || open_archive() < 0) {
        return NULL;
    }
    uint32_t kind = (kindname[0] == 'f') ? KIND_FROZEN : KIND_SOURCE;
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    if (cname == NULL) {
        PyErr_Clear();
        return NULL;
    }
    size_t lo = first_entry(kind, cname, (size_t)len);
    PyObject *bpath = NULL;
    const char *cpath = NULL;
    if (path != NULL && _PyCDS_EncodePath(path, &bpath, &cpath) < 0) {
        return NULL;
    }
    size_t i = lo;
    for (; i < cds.hdr->module_count
           && compare_key(&cds.index[i], kind, cname, (size_t)len) == 0; i++) {
        const cds_index_entry *e = &cds.index[i];
        if (kind == KIND_FROZEN) {
            break;
        }
        if (e->path_len == strlen(cpath)
            && memcmp(cds.strtab + e->path_off, cpath, e->path_len) == 0) {
            break;
        }
    }
    if (i >= cds.hdr->module_count
        || compare_key(&cds.index[i], kind, cname, (size_t)len) != 0)
    {
        cds.missed++;
        _PyCDS_Log(2, "miss: %s (not in the archive)", cname);
        Py_XDECREF(bpath);
        return NULL;
    }
    const cds_index_entry *e = &cds.index[i];
    if (kind == KIND_SOURCE) {
        /* the source must be exactly the file the entry was made from */
        struct stat st;
        int64_t mtime = 0;
        int ok = stat(cpath, &st) == 0;
        if (ok) {
            mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        }
        if (!ok || st.st_size != e->size || mtime != e->mtime_ns) {
            cds.stale++;
            _PyCDS_Log(1, "stale: %s (%s changed since the dump)", cname, cpath);
            Py_DECREF(bpath);
            return NULL;
        }
    }
    Py_XDECREF(bpath);
    if (cds.mod_state[i] == MOD_UNTOUCHED) {
        cds.mod_state[i] = prepare_module(i) == 0 ? MOD_READY : MOD_BAD;
    }
    if (cds.mod_state[i] != MOD_READY) {
        cds.rejected++;
        return NULL;
    }
    cds.served++;
    _PyCDS_Log(2, "served: %s", cname);
    return copy_module_code((PyCodeObject *)(cds.base + e->code));
}

/* Called when the runtime finalizes.  The mapping stays (objects that were
   never freed may still point into it), but a runtime initialized again in
   this process (embedding) imports normally: the interned strings the
   archive's fixups resolved to belonged to the finalized runtime. */
void
_PyCDS_ArchiveFini(void)
{
    if (cds.state > 0) {
        cds.state = -1;
        cds.reason = "the runtime that mapped the archive was finalized";
    }
    else if (cds.state == 0) {
        cds.state = -1;
        cds.reason = "not used before the runtime was finalized";
    }
}

int
_PyCDS_IsArchivedObject(PyObject *op)
{
    return cds.base != NULL && (char *)op >= cds.base
           && (char *)op < cds.base + cds.size;
}

PyObject *
_PyCDS_Info(void)
{
    const _PyCDS_Settings *s = _PyCDS_GetSettings();
    if (s->mode == _PyCDS_SHARE && _Py_IsMainInterpreter(_PyInterpreterState_GET())) {
        (void)open_archive();   /* report on the archive even before use */
    }
    return Py_BuildValue(
        "{s:s,s:s,s:z,s:z,s:i,s:O,s:z,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,"
        "s:O,s:O,s:d,s:d}",
        "mode", _PyCDS_ModeName(s->mode),
        "mode_source", s->mode_source,
        "list", s->list_path,
        "archive", s->archive_path,
        "verbose", s->verbose,
        "active", cds.state > 0 ? Py_True : Py_False,
        "reason", cds.reason,
        "modules", cds.state > 0 ? (Py_ssize_t)cds.hdr->module_count : 0,
        "served", cds.served,
        "specs_found", _PyCDS_SpecsFound,
        "stale", cds.stale,
        "missed", cds.missed,
        "rejected", cds.rejected,
        "prepared", cds.prepared,
        "relocated", cds.relocated,
        "mapped_at_preferred_address",
        (cds.state > 0 && cds.archive_delta == 0) ? Py_True : Py_False,
        "protected", cds.protect ? Py_True : Py_False,
        "open_seconds", cds.open_ns / 1e9,
        "prepare_seconds", cds.prepare_ns / 1e9);
}

/* PYTHONCDSSTATS=FILE (a testing aid): at exit, append one line of this
   process's share-mode counters to FILE, so that a test harness can prove
   that the processes it started were served from the archive. */
void
_PyCDS_WriteStats(void)
{
    const PyConfig *config = _Py_GetConfig();
    const char *path = config->use_environment ? getenv("PYTHONCDSSTATS") : NULL;
    if (path == NULL || path[0] == '\0') {
        return;
    }
    char line[256];
    int n = snprintf(line, sizeof(line),
                     "pid=%ld active=%d served=%zd stale=%zd missed=%zd "
                     "rejected=%zd protected=%d specs_found=%zd\n",
                     (long)getpid(), cds.state > 0, cds.served, cds.stale,
                     cds.missed, cds.rejected, cds.protect, _PyCDS_SpecsFound);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        /* one write() of less than PIPE_BUF bytes: lines never interleave */
        (void)write(fd, line, (size_t)n);
        close(fd);
    }
}
