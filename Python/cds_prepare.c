/* pycds: preparing one module of the mapped archive for use, once per
 * process (cds_share.c decides when): check its index entry and fixup
 * records, verify its checksum (which covers the shared strings it uses),
 * relocate its pointers if the archive or the interpreter image moved,
 * run the structural checks (cds_verify.c), then intern its identifiers,
 * build its frozensets and announce its code objects.
 *
 * Errors: the reason the module cannot be used (a constant string; "" if
 * already logged), or NULL.  Nothing raises.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_code.h"          // _PyCoCached
#include "pycore_pystate.h"       // _PyInterpreterState_GET()
#include "cds_internal.h"

#include <sys/mman.h>

/* The first use of a shared string (a well-formed one: see
   _PyCDS_SharedString()) in this process: its type, and the fields no
   checksum covers because the process writes them (the cached hash, the
   interned state), are set as the dump wrote them, whatever the file
   holds.  Fields already right are not written, so that their pages can
   stay shared. */
void
_PyCDS_SetupSharedString(_PyCDS_Archive *a, PyObject *s)
{
    size_t i = (size_t)((char *)s - a->map.base
                        - a->map.hdr->region_offset[R_STR]) / CDS_ALIGN;
    uint8_t bit = (uint8_t)(1 << (i & 7));
    if (a->str_ready[i >> 3] & bit) {
        return;
    }
    a->str_ready[i >> 3] |= bit;
    if (Py_TYPE(s) != &PyUnicode_Type) {
        Py_SET_TYPE(s, &PyUnicode_Type);
    }
    if (((PyASCIIObject *)s)->hash != -1) {
        ((PyASCIIObject *)s)->hash = -1;
    }
    if (((PyASCIIObject *)s)->state.interned != SSTATE_NOT_INTERNED) {
        ((PyASCIIObject *)s)->state.interned = SSTATE_NOT_INTERNED;
    }
}

/* The shared string at file offset 'off', or NULL if what is there is not
   a well-formed archived string: checked before anything reads it. */
PyASCIIObject *
_PyCDS_SharedString(_PyCDS_Archive *a, uint64_t off)
{
    const cds_header *h = a->map.hdr;
    uint64_t lo = h->region_offset[R_STR], hi = lo + h->region_size[R_STR];
    if (off < lo || off % CDS_ALIGN != 0 || off + sizeof(PyASCIIObject) > hi) {
        return NULL;
    }
    PyASCIIObject *s = (PyASCIIObject *)(a->map.base + off);
    uint64_t i = (off - lo) / CDS_ALIGN;
    if ((a->str_valid[i / 8] >> (i & 7)) & 1) {
        return s;   /* checked; this process may have cached its UTF-8 */
    }
    uintptr_t type = (uintptr_t)s->ob_base.ob_type;
    if (s->ob_base.ob_refcnt != _Py_IMMORTAL_REFCNT
        || (type != (uintptr_t)&PyUnicode_Type
            && type != (uintptr_t)&PyUnicode_Type - a->map.image_delta)
        || !s->state.compact || !s->state.statically_allocated
        || (s->state.kind != 1 && s->state.kind != 2 && s->state.kind != 4)
        || (s->state.ascii && s->state.kind != 1)
        || s->length < 0 || (uint64_t)s->length > hi - off)
    {
        return NULL;
    }
    size_t header = s->state.ascii ? sizeof(PyASCIIObject)
                                   : sizeof(PyCompactUnicodeObject);
    if (off + header + ((uint64_t)s->length + 1) * s->state.kind > hi
        || (!s->state.ascii
            /* no UTF-8 cache before use: its pointer would be followed */
            && (((PyCompactUnicodeObject *)s)->utf8 != NULL
                || ((PyCompactUnicodeObject *)s)->utf8_length != 0)))
    {
        return NULL;
    }
    if (a->verify && !_PyCDS_CanonicalString(s)) {
        return NULL;
    }
    /* checked: the structural checks rely on it (cds_verify.c); and set
       up at once, so that every string they accept is usable even where
       a (forged) archive has no intern fixup for it */
    a->str_valid[i / 8] |= (uint8_t)(1 << (i & 7));
    if (!a->copy) {
        _PyCDS_SetupSharedString(a, (PyObject *)s);
    }
    return s;
}


/* Relocation writes to every page of a module (each object's type pointer
   moves with the interpreter image), so each page would take a read fault
   for the checksum and then a copy-on-write fault.  Making the module's
   pages private in one call first is cheaper; the contents are unchanged.
   Only a hint: older kernels refuse it and the faults happen as before. */
static void
populate_for_relocation(_PyCDS_Archive *a, const cds_index_entry *e)
{
    uintptr_t page = (uintptr_t)CDS_PAGE - 1;
    for (int r = 0; r < CDS_NRANGES; r++) {
        if (e->range[r][0] == e->range[r][1]
            || (a->protect && r + 1 == R_COLD))   /* mapped read-only */
        {
            continue;
        }
        uintptr_t lo = (uintptr_t)a->map.base + e->range[r][0];
        uintptr_t hi = (uintptr_t)a->map.base + e->range[r][1];
        lo &= ~page;
        hi = (hi + page) & ~page;
        _PyCDS_Populate((void *)lo, hi - lo);
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
    _PyCDS_Archive *a = PyCapsule_GetPointer(capsule, NULL);
    if (a->map.base == NULL) {
        return;
    }
    const cds_fixup *all = (const cds_fixup *)(a->map.base + a->map.hdr->fixup_offset);
    for (uint64_t i = 0; i < a->map.hdr->module_count; i++) {
        const cds_index_entry *e = &a->map.index[i];
        if (a->mod_state[i] != CDS_MOD_READY
            && a->mod_state[i] != CDS_MOD_SPENT) {
            continue;
        }
        _PyCDS_View view;
        _PyCDS_ModuleView(a, (size_t)i, &view);
        for (uint64_t k = 0; k < e->fixup_count; k++) {
            const cds_fixup *f = &all[e->fixup_start + k];
            if (CDS_FIXUP_KIND(*f) != FIXUP_CODE) {
                continue;
            }
            PyCodeObject *co = (PyCodeObject *)_PyCDS_ViewAddr(
                &view, CDS_FIXUP_OFFSET(*f));
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
keep_until_finalization(_PyCDS_Archive *a, PyInterpreterState *interp, PyObject *obj)
{
    PyObject *dict = PyInterpreterState_GetDict(interp);      // borrowed
    if (dict == NULL) {
        return -1;
    }
    /* one list per archive */
    char key[64];
    snprintf(key, sizeof(key), "_pycds_fixup_objects_%p", (void *)a);
    PyObject *list;
    if (PyDict_GetItemStringRef(dict, key, &list) < 0) {
        return -1;
    }
    if (list == NULL) {
        PyObject *capsule = PyCapsule_New((void *)a, NULL,
                                          release_archived_caches);
        list = PyList_New(0);
        if (capsule == NULL || list == NULL
            || PyList_Append(list, capsule) < 0
            || PyDict_SetItemString(dict, key, list) < 0)
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

void
_PyCDS_ModuleView(const _PyCDS_Archive *a, size_t i, _PyCDS_View *v)
{
    const cds_index_entry *e = &a->map.index[i];
    char *block = a->mod_block ? a->mod_block[i] : NULL;
    v->e = e;
    /* in a copy, the code range last: its run-once code objects, at its
       end, are then at the end of the block (_PyCDS_ReleaseRunOnce()) */
    static const int order[CDS_NRANGES] = {
        R_TUP - 1, R_WARM - 1, R_COLD - 1, R_CODE - 1};
    uint64_t at = 0;
    for (int i = 0; i < CDS_NRANGES; i++) {
        int r = order[i];
        if (block == NULL) {
            v->at[r] = a->map.base + e->range[r][0];
        }
        else {
            /* as aligned as in the file: objects start on CDS_ALIGN */
            at += e->range[r][0] % CDS_ALIGN;
            v->at[r] = block + at;
            at += e->range[r][1] - e->range[r][0];
            at = (at + CDS_ALIGN - 1) & ~(uint64_t)(CDS_ALIGN - 1);
        }
    }
}

/* Copy mode's module blocks, CDS_ALIGN-aligned and never freed (the
   objects are immortal), carved one after another from anonymous chunks.
   The pages are made present (MADV_POPULATE_WRITE) as the blocks reach
   them, in one call per block, before pread() fills them: a page fault
   taken inside the kernel's copy, one per page, costs more (the stdlib
   program took about 1,400 such faults; in a paravirtualized guest, where
   page-table updates trap to the hypervisor, 13 us each against 8 for a
   populated page and its first write).  Only a hint: where the kernel
   refuses it, the faults happen as before. */
#define CDS_BLOCK_CHUNK ((size_t)1 << 20)

static char *
block_alloc(_PyCDS_Archive *a, uint64_t size)
{
    uintptr_t page = (uintptr_t)CDS_PAGE - 1;
    size = (size + CDS_ALIGN - 1) & ~(uint64_t)(CDS_ALIGN - 1);
    if (size > (uint64_t)(a->blocks.end - a->blocks.next)) {
        /* the rest of the chunk stays unused, and never present */
        if (size > PY_SSIZE_T_MAX - CDS_BLOCK_CHUNK) {
            return NULL;
        }
        size_t len = size > CDS_BLOCK_CHUNK
                     ? (size_t)((size + page) & ~(uint64_t)page)
                     : CDS_BLOCK_CHUNK;
        char *chunk = mmap(NULL, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (chunk == MAP_FAILED) {
            return NULL;
        }
        a->blocks.next = a->blocks.present = chunk;
        a->blocks.end = chunk + len;
    }
    char *block = a->blocks.next;
    a->blocks.next += size;
    char *hi = (char *)(((uintptr_t)a->blocks.next + page) & ~page);
    if (hi > a->blocks.present) {
        _PyCDS_Populate(a->blocks.present, hi - a->blocks.present);
        a->blocks.present = hi;
    }
    return block;
}

/* Copy mode: read the module's ranges into one block, each range
   16-aligned as in the file; *sum: their checksum, as module_checksum()
   begins it. */
static char *
copy_module(_PyCDS_Archive *a, size_t index, uint64_t *sum)
{
    const cds_index_entry *e = &a->map.index[index];
    uint64_t size = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        size += CDS_ALIGN + (e->range[r][1] - e->range[r][0]);
    }
    char *block = block_alloc(a, size);
    if (block == NULL) {
        return NULL;
    }
    a->mod_block[index] = block;
    _PyCDS_View v;
    _PyCDS_ModuleView(a, index, &v);
    *sum = 0;
    for (int r = 0; r < CDS_NRANGES; r++) {
        _PyCDS_MapRead(&a->map, v.at[r], e->range[r][0],
                       e->range[r][1] - e->range[r][0], sum);
    }
    return block;
}

/* Whether everything the index entry points at is where it may be: its
   ranges within their regions, its relocations and fixups within their
   tables, its code object and every fixup slot within its own ranges. */
static int
entry_ok(_PyCDS_Archive *a, const cds_index_entry *e)
{
    const cds_header *h = a->map.hdr;
    for (int r = 0; r < CDS_NRANGES; r++) {
        uint64_t lo = h->region_offset[r + 1], hi = lo + h->region_size[r + 1];
        if (e->range[r][0] > e->range[r][1] || e->range[r][0] < lo
            || e->range[r][1] > hi)
        {
            return 0;
        }
    }
    return !(e->reloc_start > h->reloc_count
             || e->reloc_count > h->reloc_count - e->reloc_start
             || e->reloc_count != _PyCDS_RelocWords(e->range)
             || e->fixup_start > h->fixup_count
             || e->fixup_count > h->fixup_count - e->fixup_start
             || !_PyCDS_InModule(e, e->code, sizeof(PyCodeObject)));
}

static int
fixups_ok(_PyCDS_Archive *a, const cds_index_entry *e, const cds_fixup *fixups)
{
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (!_PyCDS_InModule(e, CDS_FIXUP_OFFSET(fixups[k]), 8)
            || CDS_FIXUP_KIND(fixups[k]) < FIXUP_INTERN
            || CDS_FIXUP_KIND(fixups[k]) > FIXUP_CODE)
        {
            return 0;
        }
    }
    return 1;
}

/* The module's checksum, as cds_builder.c's module_checksum(a, ) makes it;
   'ranges': that of its ranges, summed as they were copied, or NULL.
   *bad_string is set if a shared string it interns is malformed. */
static uint64_t
module_checksum(_PyCDS_Archive *a, const _PyCDS_View *v,
                const cds_fixup *fixups, const uint64_t *ranges,
                int *bad_string)
{
    const cds_index_entry *e = v->e;
    uint64_t c = 0;
    if (ranges != NULL) {
        c = *ranges;
    }
    else {
        for (int r = 0; r < CDS_NRANGES; r++) {
            c = _PyCDS_Checksum(c, v->at[r],
                                e->range[r][1] - e->range[r][0]);
        }
    }
    c = _PyCDS_Checksum(c, fixups, sizeof(cds_fixup) * e->fixup_count);
    uint64_t prev_target = UINT64_MAX;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        if (CDS_FIXUP_KIND(fixups[k]) != FIXUP_INTERN) {
            continue;
        }
        /* the slot still holds the address the dump laid out */
        uint64_t target = *(const uint64_t *)_PyCDS_ViewAddr(
                              v, CDS_FIXUP_OFFSET(fixups[k]))
                          - a->map.hdr->preferred_base;
        if (target == prev_target) {
            continue;    /* the same string as the fixup before */
        }
        prev_target = target;
        const PyASCIIObject *str = _PyCDS_SharedString(a, target);
        if (str == NULL) {
            *bad_string = 1;
            return 0;
        }
        c = _PyCDS_StringDigest(c, str);
    }
    return c;
}

/* The runs of a module's relocation bitmap, one per range: each counts
   from the range's start rounded down to 8 bytes (cds_format.h).  The
   relocations walk them with a loop nest over words and set bits, which
   keeps the per-slot work to finding the bit and rewriting the slot. */
typedef struct {
    const uint64_t *words[CDS_NRANGES];
    uint64_t nw[CDS_NRANGES];    /* words in the run */
    uint64_t *at[CDS_NRANGES];   /* the slot bit 0 of the run marks */
} reloc_runs;

/* 0 if a bit marks a slot outside its range (nothing is written then):
   one that starts before the range (bit 0, if the range does not start
   on 8 bytes) or does not end inside it (in the run's last word) */
static int
reloc_runs_init(reloc_runs *runs, const _PyCDS_View *v, const uint64_t *words)
{
    for (int r = 0; r < CDS_NRANGES; r++) {
        const uint64_t *range = v->e->range[r];
        uint64_t skew = range[0] & 7;
        uint64_t nw = _PyCDS_RangeRelocWords(range[0], range[1]);
        if (nw > 0) {
            uint64_t fit = (range[1] - (range[0] - skew)) / 8;
            uint64_t last = fit - 64 * (nw - 1);     /* 1 to 64 bits */
            if ((skew != 0 && (words[0] & 1))
                || (last < 64 && (words[nw - 1] >> last) != 0))
            {
                return 0;
            }
        }
        runs->words[r] = words;
        runs->nw[r] = nw;
        runs->at[r] = (uint64_t *)(v->at[r] - skew);
        words += nw;
    }
    return 1;
}

/* Relocate only when something moved: otherwise nothing is written.
   Each set bit of the module's bitmap is a pointer slot; its value says
   whether it points into the archive (as laid out for preferred_base) or
   into the interpreter image, and only what moved is written.  A bit
   outside its range is refused before anything is written. */
static int
relocate_in_place(_PyCDS_Archive *a, const _PyCDS_View *v,
                  const uint64_t *relocs)
{
    const cds_index_entry *e = v->e;
    uint64_t preferred = a->map.hdr->preferred_base;
    uint64_t size = a->map.hdr->file_size;
    uint64_t archive = (uint64_t)a->map.archive_delta;
    uint64_t image = (uint64_t)a->map.image_delta;
    reloc_runs runs;
    if (!reloc_runs_init(&runs, v, relocs)) {
        return -1;
    }
    if (a->protect) {
        _PyCDS_ProtectRange(&a->map, e->range[R_COLD - 1][0],
                            e->range[R_COLD - 1][1], 1);
    }
    for (int r = 0; r < CDS_NRANGES; r++) {
        uint64_t *at = runs.at[r];
        for (uint64_t w = 0; w < runs.nw[r]; w++, at += 64) {
            for (uint64_t bits = runs.words[r][w]; bits; bits &= bits - 1) {
                uint64_t *slot = at + __builtin_ctzll(bits);
                *slot += (*slot - preferred < size) ? archive : image;
            }
        }
    }
    if (a->protect) {
        _PyCDS_ProtectRange(&a->map, e->range[R_COLD - 1][0],
                            e->range[R_COLD - 1][1], 0);
    }
    return 0;
}

/* Copy mode: every slot is written in the copy.  A pointer to an object of
   the module goes to its copy, one to a shared string into the mapping
   (counted in *to_strings: the intern fixups must replace them all), one
   into the image moves with it; anything else is refused. */
static int
relocate_copy(_PyCDS_Archive *a, const _PyCDS_View *v, const uint64_t *relocs,
              uint64_t *to_strings)
{
    const cds_index_entry *e = v->e;
    uint64_t preferred = a->map.hdr->preferred_base;
    uint64_t size = a->map.hdr->file_size;
    uint64_t str_lo = a->map.hdr->region_offset[R_STR];
    uint64_t str_size = a->map.hdr->region_size[R_STR];
    uint64_t lo[CDS_NRANGES], len[CDS_NRANGES];
    uint64_t to[CDS_NRANGES];       /* file offset + to[r]: the copy */
    for (int r = 0; r < CDS_NRANGES; r++) {
        lo[r] = e->range[r][0];
        len[r] = e->range[r][1] - e->range[r][0];
        to[r] = (uint64_t)(uintptr_t)v->at[r] - lo[r];
    }
    uint64_t image = (uint64_t)a->map.image_delta;
    uint64_t strings = (uint64_t)(uintptr_t)a->map.base;
    uint64_t n_strings = 0;
    reloc_runs runs;
    if (!reloc_runs_init(&runs, v, relocs)) {
        return -1;
    }
    for (int r = 0; r < CDS_NRANGES; r++) {
        uint64_t *at = runs.at[r];
        for (uint64_t w = 0; w < runs.nw[r]; w++, at += 64) {
            for (uint64_t bits = runs.words[r][w]; bits; bits &= bits - 1) {
                uint64_t *slot = at + __builtin_ctzll(bits);
                uint64_t target = *slot - preferred;
                /* by frequency: the image (types, None, ...), then the
                   shared strings (a third of the stdlib program's
                   slots), then the module's own objects */
                if (target >= size) {
                    *slot += image;
                }
                else if (target - str_lo < str_size) {
                    *slot = target + strings;
                    n_strings++;
                }
                else if (target - lo[R_CODE - 1] < len[R_CODE - 1]) {
                    *slot = target + to[R_CODE - 1];
                }
                else if (target - lo[R_TUP - 1] < len[R_TUP - 1]) {
                    *slot = target + to[R_TUP - 1];
                }
                else if (target - lo[R_WARM - 1] < len[R_WARM - 1]) {
                    *slot = target + to[R_WARM - 1];
                }
                else if (target - lo[R_COLD - 1] < len[R_COLD - 1]) {
                    *slot = target + to[R_COLD - 1];
                }
                else {
                    return -1;
                }
            }
        }
    }
    *to_strings = n_strings;
    return 0;
}

/* Copy mode remembers, for the shared strings used last, the interned
   string their fixups resolve to, in a direct-mapped cache of a fixed
   size: a miss only costs a copy that interning finds equal to a string
   interned before (and frees), and a table of every string used would
   hold a slot per string for the process's lifetime (stdlib program:
   16,135 strings, 512 kB). */
#define CDS_STR_CACHE ((size_t)1 << 12)

/* The cache slot of the string at 'off': the offsets of the strings a
   module uses are close together, so they are spread multiplicatively */
static inline size_t
str_copy_slot(uint64_t off)
{
    return (size_t)(((off / CDS_ALIGN) * 0x9E3779B97F4A7C15u) >> 32)
           & (CDS_STR_CACHE - 1);
}

/* Copy mode: the string the fixups of the shared string 's' (in the
   mapping, well-formed) resolve to: an equal string interned before, or
   a copy of 's' interned now.  NULL (logged) if out of memory. */
static PyObject *
interned_copy(_PyCDS_Archive *a, PyInterpreterState *interp, PyObject *s)
{
    uint64_t off = (uint64_t)((char *)s - a->map.base);
    if (a->str_copy == NULL) {
        a->str_copy = PyMem_RawCalloc(CDS_STR_CACHE, sizeof(*a->str_copy));
        if (a->str_copy == NULL) {
            _PyCDS_Log(1, "out of memory copying a string");
            return NULL;
        }
    }
    struct _PyCDS_StrCopy *slot = &a->str_copy[str_copy_slot(off)];
    if (slot->off == off) {
        return slot->str;
    }
    PyASCIIObject *src = (PyASCIIObject *)s;
    size_t size = (src->state.ascii ? sizeof(PyASCIIObject)
                                    : sizeof(PyCompactUnicodeObject))
                  + ((size_t)src->length + 1) * src->state.kind;
    /* like the archived strings: immortal, statically allocated (never
       freed); from the object allocator, as a normal import's strings,
       but in a debug build, whose -X showrefcount counts its blocks */
#ifdef Py_DEBUG
    PyASCIIObject *copy = PyMem_RawMalloc(size);
#else
    PyASCIIObject *copy = PyObject_Malloc(size);
#endif
    if (copy == NULL) {
        _PyCDS_Log(1, "out of memory copying a string");
        return NULL;
    }
    memcpy(copy, src, size);
    Py_SET_TYPE(copy, &PyUnicode_Type);
    copy->hash = -1;
    copy->state.interned = SSTATE_NOT_INTERNED;
    PyObject *t = _PyUnicode_InternArchived(interp, (PyObject *)copy);
    if (t != (PyObject *)copy) {
        /* an equal string was interned before */
#ifdef Py_DEBUG
        PyMem_RawFree(copy);
#else
        PyObject_Free(copy);
#endif
    }
    slot->off = off;              /* R_STR is never at offset 0 */
    slot->str = t;                /* immortal */
    return t;
}

/* Run the module's fixups: intern its identifiers, build its frozensets,
   announce its code objects. */
static int
apply_fixups(_PyCDS_Archive *a, const _PyCDS_View *v, const cds_fixup *fixups,
             const char *name, uint64_t *interned)
{
    const cds_index_entry *e = v->e;
    char *base = a->map.base;
    PyInterpreterState *interp = _PyInterpreterState_GET();
#ifdef Py_DEBUG
    if (keep_until_finalization(a, interp, NULL) < 0) {
        PyErr_Clear();
    }
#endif
    uint64_t str_lo = a->map.hdr->region_offset[R_STR];
    uint64_t str_size = a->map.hdr->region_size[R_STR];
    PyObject *last_s = NULL, *last_t = NULL;
    for (uint64_t k = 0; k < e->fixup_count; k++) {
        PyObject **slot = (PyObject **)_PyCDS_ViewAddr(
            v, CDS_FIXUP_OFFSET(fixups[k]));
        switch (CDS_FIXUP_KIND(fixups[k])) {
            case FIXUP_INTERN: {
                /* consecutive fixups of the same string: intern it once */
                PyObject *s = *slot;
                if ((uint64_t)((char *)s - base - str_lo) >= str_size) {
                    /* fixed up already: a second fixup of the slot */
                    _PyCDS_Log(1, "module %s: a slot fixed up twice "
                               "(corrupt archive)", name);
                    return -1;
                }
                PyObject *t;
                if (s == last_s) {
                    t = last_t;
                }
                else if (a->copy) {
                    t = interned_copy(a, interp, s);
                    if (t == NULL) {
                        return -1;
                    }
                }
                else {
                    _PyCDS_SetupSharedString(a, s);
                    t = _PyUnicode_InternArchived(interp, s);
                }
                (*interned)++;
                if (t != s) {
                    *slot = t;   /* owns the reference, never released */
                    if (s == last_s || a->copy) {
                        Py_INCREF(t);
                    }
                }
                last_s = s;
                last_t = t;
                break;
            }
            case FIXUP_FROZENSET: {
                int r;
                if (_PyCDS_ViewOffset(v, *slot, &r) == UINT64_MAX) {
                    _PyCDS_Log(1, "module %s: a slot fixed up twice "
                               "(corrupt archive)", name);
                    return -1;
                }
                PyObject *fs = PyFrozenSet_New(*slot);
#ifdef Py_DEBUG
                if (fs != NULL && keep_until_finalization(a, interp, fs) < 0) {
                    Py_CLEAR(fs);
                }
#endif
                if (fs == NULL) {
                    PyErr_Clear();
                    _PyCDS_Log(1, "module %s: cannot rebuild a frozenset", name);
                    return -1;
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
    return 0;
}

/* 'reloc_sum': the checksum of 'relocs', summed as they were copied, or
   NULL */
static const char *
prepare_module(_PyCDS_Archive *a, const cds_index_entry *e, const char *name,
               const uint64_t *relocs, const cds_fixup *fixups,
               const uint64_t *reloc_sum)
{
    size_t index = (size_t)(e - a->map.index);
    if (!fixups_ok(a, e, fixups)) {
        return "bad fixup (corrupt archive)";
    }
    int relocate = (a->copy || a->map.archive_delta != 0
                    || a->map.image_delta != 0);
    uint64_t ranges_sum;
    if (a->copy) {
        /* summed as copied: what is used is what was checked */
        if (copy_module(a, index, &ranges_sum) == NULL) {
            return "out of memory";
        }
    }
    else if (relocate) {
        populate_for_relocation(a, e);
    }
    _PyCDS_View view;
    _PyCDS_ModuleView(a, index, &view);
    uint64_t to_strings = 0;
    int bad_string = 0;
    uint64_t c = module_checksum(a, &view, fixups,
                                 a->copy ? &ranges_sum : NULL, &bad_string);
    if (bad_string) {
        return "bad shared string (corrupt archive)";
    }
    if (c != e->checksum) {
        return "checksum mismatch (corrupt archive)";
    }
    if (relocate) {
        /* the relocations are read only when something moved */
        uint64_t rc = reloc_sum != NULL
                      ? *reloc_sum
                      : _PyCDS_Checksum(0, relocs, 8 * e->reloc_count);
        if (rc != e->reloc_checksum) {
            return "relocations checksum mismatch (corrupt archive)";
        }
        if ((a->copy ? relocate_copy(a, &view, relocs, &to_strings)
                     : relocate_in_place(a, &view, relocs)) < 0)
        {
            return "bad relocation (corrupt archive)";
        }
        a->relocated++;
    }
    /* what a forged archive could point anywhere (cds_verify.c); in a
       copy, whether the run-once code objects, which the builder puts
       last, from the module's own on, can be released after the import */
    uintptr_t tail = a->copy ? (uintptr_t)_PyCDS_ViewAddr(&view, e->code)
                             : UINTPTR_MAX;
    int tail_free;
    const char *bad = _PyCDS_VerifyModule(&a->map, &view, e, fixups,
                                          a->str_valid, a->verify,
                                          tail, &tail_free);
    if (bad != NULL) {
        return bad;
    }
    if (a->copy) {
        a->blocks.once = tail_free ? (char *)tail : NULL;
        a->blocks.once_end = a->blocks.next;
        a->blocks.once_index = index;
    }
    uint64_t interned = 0;
    if (apply_fixups(a, &view, fixups, name, &interned) < 0) {
        return "";     /* logged by apply_fixups(a, ) */
    }
    if (a->copy && interned != to_strings) {
        /* a pointer to a shared string that no fixup replaced would lead
           into the mapping, to a string never set up in copy mode */
        return "a shared string without an intern fixup (corrupt archive)";
    }
    a->prepared++;
    return NULL;
}

int
_PyCDS_ReleaseRunOnce(_PyCDS_Archive *a, size_t i)
{
#ifdef Py_DEBUG
    /* a debug build releases, at finalization, the caches that the
       archived code objects of each module's block made
       (release_archived_caches()): a module copied again would leave
       those of its first copy */
    (void)a;
    (void)i;
    return 0;
#else
    /* nothing may have been carved since: a module imported while the
       copies were made (by a finalizer the allocation ran) came after */
    if (!a->copy || a->blocks.once == NULL || a->blocks.once_index != i
        || a->blocks.next != a->blocks.once_end)
    {
        return 0;
    }
    a->blocks.next = a->blocks.once;
    a->blocks.once = NULL;
    a->mod_state[i] = CDS_MOD_SPENT;
    a->released++;
    return 1;
#endif
}

const char *
_PyCDS_PrepareModule(_PyCDS_Archive *a, const cds_index_entry *e, const char *name)
{
    const cds_header *h = a->map.hdr;
    if (!entry_ok(a, e)) {
        return "bad index entry (corrupt archive)";
    }
    const uint64_t *relocs = (const uint64_t *)(a->map.base + h->reloc_offset)
                             + e->reloc_start;
    const cds_fixup *fixups = (const cds_fixup *)(a->map.base + h->fixup_offset)
                              + e->fixup_start;
    if (!a->copy) {
        return prepare_module(a, e, name, relocs, fixups, NULL);
    }
    /* Copy mode reads the module's records, as its objects, with pread():
       the mapping's pages of the records and the object regions are never
       touched (a fault would map a whole large folio of the page cache
       into the process, and mapping then dropping them costs more than
       the read).  Only the shared strings are read through the mapping. */
    uint64_t *records = PyMem_RawMalloc(8 * (e->reloc_count + e->fixup_count)
                                        + 8);
    if (records == NULL) {
        return "out of memory";
    }
    uint64_t reloc_sum = 0;
    _PyCDS_MapOpen(&a->map);
    _PyCDS_MapRead(&a->map, records, h->reloc_offset + 8 * e->reloc_start,
                   8 * e->reloc_count, &reloc_sum);
    _PyCDS_MapRead(&a->map, records + e->reloc_count,
                   h->fixup_offset + 8 * e->fixup_start, 8 * e->fixup_count,
                   NULL);
    const char *reason = prepare_module(a, e, name, records,
                                        records + e->reloc_count, &reloc_sum);
    _PyCDS_MapClose(&a->map);
    PyMem_RawFree(records);
    return reason;
}

/* A module's own code object and the class bodies it defines run once,
   when the module is imported, and running writes to their bytecode (the
   adaptive interpreter's counters): serve copies on the heap, which are
   freed after the import as the code objects from a .pyc are, and leave the
   archived ones unwritten.  The copies refer to the same archived names,
   tables and other constants; functions' code stays archived. */
PyObject *
_PyCDS_CopyModuleCode(PyCodeObject *co)
{
    /* the constants, with the class bodies copied */
    PyObject *consts = co->co_consts;
    Py_ssize_t n = PyTuple_GET_SIZE(consts);
    Py_ssize_t bodies = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        bodies += _PyCDS_IsClassBody(PyTuple_GET_ITEM(consts, i));
    }
    if (bodies) {
        consts = PyTuple_New(n);
        if (consts == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
            c = _PyCDS_IsClassBody(c) ? _PyCDS_CopyModuleCode((PyCodeObject *)c)
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
