/* pycds: the archive's file layout -- from the builder's regions to what
 * the file holds.
 *
 * Places the module index, string table, relocation and fixup tables and
 * the object regions in the file (page-aligned regions, in the order of
 * cds_format.h), resolves the archive-internal pointers for the preferred
 * address, makes the relocation and fixup records, and fills the index
 * entries with their checksums and the header.  cds_filemap.c writes the
 * result.
 *
 * Errors: -1 with a Python exception (MemoryError).
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_pystate.h"       // _Py_GetConfig()
#include "cds_internal.h"
#include "cds_builder.h"

/* Index order: by kind, name, path (SHARE looks entries up by bisection). */
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

static uint64_t
align16(uint64_t n)
{
    return (n + CDS_ALIGN - 1) & ~(uint64_t)(CDS_ALIGN - 1);
}

/* The string table: names and paths, in index order. */
static int
build_strtab(module_rec **order, size_t n, cds_index_entry *index,
             buffer *strtab)
{
    for (size_t i = 0; i < n; i++) {
        module_rec *m = order[i];
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(m->name, &len);
        if (s == NULL) {
            return -1;
        }
        index[i].kind = m->kind;
        index[i].name_off = strtab->len;
        index[i].name_len = (uint32_t)len;
        if (_PyCDS_BufAppend(strtab, s, len + 1) < 0) {
            return -1;
        }
        if (m->path != NULL) {
            index[i].path_off = strtab->len;
            index[i].path_len = PyBytes_GET_SIZE(m->path);
            if (_PyCDS_BufAppend(strtab, PyBytes_AS_STRING(m->path),
                           PyBytes_GET_SIZE(m->path) + 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Place the tables and regions in the file: fills the header's offsets
   and sizes, and region_base[] (the file offset of each builder region;
   R_STR holds the seed, padded to 16 bytes, then the other strings). */
static void
place_regions(writer *w, cds_header *h, size_t n, size_t strtab_len,
              uint64_t region_base[CDS_NREGIONS + 1])
{
    uint64_t seed_pad = align16(w->region[R_SEED].len);
    h->preferred_base = CDS_PREFERRED_BASE;
    h->index_offset = CDS_PAGE;
    h->module_count = n;
    h->strtab_offset = h->index_offset + n * sizeof(cds_index_entry);
    h->strtab_size = strtab_len;
    h->reloc_offset = align16(h->strtab_offset + h->strtab_size);
    h->reloc_count = 0;
    for (size_t i = 0; i < w->nmodules; i++) {
        const module_rec *m = &w->modules[i];
        for (int r = R_STR + 1; r < CDS_NREGIONS; r++) {
            h->reloc_count += _PyCDS_RangeRelocWords(m->start[r], m->end[r]);
        }
    }
    h->fixup_offset = h->reloc_offset + 8 * h->reloc_count;
    h->fixup_count = w->fixups.len;
    uint64_t at = h->fixup_offset + sizeof(cds_fixup) * h->fixup_count;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        h->region_offset[r] = page_align(at);
        h->region_size[r] = w->region[r].len + (r == R_STR ? seed_pad : 0);
        at = h->region_offset[r] + h->region_size[r];
    }
    h->file_size = page_align(at);
    h->seed_size = w->region[R_SEED].len;
    for (int r = 0; r < CDS_NREGIONS; r++) {
        region_base[r] = h->region_offset[r];
    }
    region_base[R_SEED] = h->region_offset[R_STR];
    region_base[R_STR] += seed_pad;
}

/* Resolve archive-internal pointers for the preferred address, set the
   modules' relocation bits (each module's bitmap at its reloc_word), and
   make the fixup records. */
static void
resolve_pointers(writer *w, const uint64_t region_base[CDS_NREGIONS + 1],
                 uint64_t *relocs, cds_fixup *fixups)
{
    for (size_t i = 0; i < w->nmodules; i++) {
        const module_rec *m = &w->modules[i];
        uint64_t word[CDS_NREGIONS];    /* where each range's bits start */
        uint64_t at = m->reloc_word;
        for (int r = R_STR + 1; r < CDS_NREGIONS; r++) {
            word[r] = at;
            at += _PyCDS_RangeRelocWords(m->start[r], m->end[r]);
        }
        for (size_t k = m->ptr_start; k < m->ptr_end; k++) {
            slot_rec *p = &w->ptrs.items[k];
            if (p->kind == RELOC_ARCHIVE) {
                uint64_t value = CDS_PREFERRED_BASE
                                 + region_base[p->target_region] + p->target;
                memcpy(w->region[p->region].data + p->offset, &value, 8);
            }
            assert(p->region > R_STR && p->region < CDS_NREGIONS);
            /* region offsets and file offsets agree modulo the page */
            uint64_t bit = (p->offset - (m->start[p->region] & ~(uint64_t)7))
                           / 8;
            relocs[word[p->region] + bit / 64] |= (uint64_t)1 << (bit % 64);
        }
    }
    for (size_t i = 0; i < w->fixups.len; i++) {
        slot_rec *r = &w->fixups.items[i];
        fixups[i] = (region_base[r->region] + r->offset) | r->kind;
    }
}

/* A module's checksum: its objects, its fixups, and the contents of the
   shared strings it interns, once per run of fixups of the same string
   (the order in which SHARE verifies them). */
static uint64_t
module_checksum(writer *w, const module_rec *m, const cds_fixup *fixups,
                const cds_index_entry *e)
{
    uint64_t c = 0;
    for (int r = 1; r < CDS_NREGIONS; r++) {
        c = _PyCDS_Checksum(c, w->region[r].data + m->start[r],
                            m->end[r] - m->start[r]);
    }
    c = _PyCDS_Checksum(c, fixups + e->fixup_start,
                        sizeof(cds_fixup) * e->fixup_count);
    const slot_rec *prev = NULL;
    for (size_t k = m->fix_start; k < m->fix_end; k++) {
        slot_rec *r = &w->fixups.items[k];
        if (r->kind == FIXUP_INTERN
            && (prev == NULL || prev->target != r->target
                || prev->target_region != r->target_region))
        {
            c = _PyCDS_StringDigest(c, (const PyASCIIObject *)
                                    (w->region[r->target_region].data + r->target));
            prev = r;
        }
    }
    return c;
}

/* The per-module index entries, with their checksums. */
static void
fill_index(writer *w, module_rec **order, size_t n, const cds_header *h,
           const uint64_t region_base[CDS_NREGIONS + 1],
           cds_index_entry *index, uint64_t *relocs,
           const cds_fixup *fixups)
{
    for (size_t i = 0; i < n; i++) {
        module_rec *m = order[i];
        cds_index_entry *e = &index[i];
        e->mtime_ns = m->stamp.mtime_ns;
        e->size = m->stamp.size;
        e->source_hash = m->stamp.source_hash;
        e->pyc_mtime_ns = m->stamp.pyc_mtime_ns;
        e->pyc_size = m->stamp.pyc_size;
        e->code = region_base[m->code_region] + m->code;
        for (int r = 0; r < CDS_NRANGES; r++) {
            e->range[r][0] = h->region_offset[r + 1] + m->start[r + 1];
            e->range[r][1] = h->region_offset[r + 1] + m->end[r + 1];
        }
        e->reloc_start = m->reloc_word;
        e->reloc_count = _PyCDS_RelocWords(e->range);
        e->fixup_start = m->fix_start;
        e->fixup_count = m->fix_end - m->fix_start;
        e->reloc_checksum = _PyCDS_Checksum(0, relocs + e->reloc_start,
                                            8 * e->reloc_count);
        e->checksum = module_checksum(w, m, fixups, e);
    }
}

static void
add_piece(_PyCDS_Layout *lay, uint64_t offset, const void *data, uint64_t len)
{
    assert(lay->npieces < CDS_MAX_PIECES);
    lay->piece[lay->npieces].offset = offset;
    lay->piece[lay->npieces].data = data ? data : "";
    lay->piece[lay->npieces].len = len;
    lay->npieces++;
}

int
_PyCDS_BuilderLayout(_PyCDS_Builder *w, _PyCDS_Layout *lay)
{
    size_t n = w->nmodules;
    memset(lay, 0, sizeof(*lay));
    module_rec **order = PyMem_RawMalloc((n ? n : 1) * sizeof(module_rec *));
    buffer strtab = {NULL, 0, 0};
    lay->index = PyMem_RawCalloc(n ? n : 1, sizeof(cds_index_entry));
    lay->relocs = NULL;    /* once the bitmap's size is known */
    lay->fixups = PyMem_RawMalloc((w->fixups.len ? w->fixups.len : 1)
                                  * sizeof(cds_fixup));
    if (order == NULL || lay->index == NULL || lay->fixups == NULL)
    {
        PyErr_NoMemory();
        goto error;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = &w->modules[i];
    }
    qsort(order, n, sizeof(module_rec *), compare_modules);
    if (build_strtab(order, n, lay->index, &strtab) < 0) {
        goto error;
    }
    lay->strtab = strtab.data;

    cds_header *h = &lay->header;
    memcpy(h->magic, CDS_MAGIC, 8);
    h->format_version = CDS_FORMAT_VERSION;
    h->header_size = sizeof(cds_header);
    _PyCDS_Fingerprint(h->fingerprint);
    uint64_t region_base[CDS_NREGIONS + 1];
    place_regions(w, h, n, strtab.len, region_base);
    lay->relocs = PyMem_RawCalloc(h->reloc_count ? h->reloc_count : 1, 8);
    if (lay->relocs == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    /* each module's bitmap, in index order */
    uint64_t words = 0;
    for (size_t i = 0; i < n; i++) {
        order[i]->reloc_word = words;
        for (int r = R_STR + 1; r < CDS_NREGIONS; r++) {
            words += _PyCDS_RangeRelocWords(order[i]->start[r],
                                            order[i]->end[r]);
        }
    }
    h->seed_checksum = _PyCDS_Checksum(0, w->region[R_SEED].data
                                          ? w->region[R_SEED].data : "",
                                       h->seed_size);
    h->optimize = _Py_GetConfig()->optimization_level;
    resolve_pointers(w, region_base, lay->relocs, lay->fixups);
    fill_index(w, order, n, h, region_base, lay->index, lay->relocs,
               lay->fixups);
    h->index_checksum = _PyCDS_Checksum(
        _PyCDS_Checksum(0, lay->index, n * sizeof(cds_index_entry)),
        strtab.data ? strtab.data : "", strtab.len);
    h->header_checksum = _PyCDS_Checksum(0, h, sizeof(*h));

    /* what the file holds, in order; the gaps are zeros */
    add_piece(lay, 0, h, sizeof(*h));
    add_piece(lay, h->index_offset, lay->index, n * sizeof(cds_index_entry));
    add_piece(lay, h->strtab_offset, strtab.data, strtab.len);
    add_piece(lay, h->reloc_offset, lay->relocs, 8 * h->reloc_count);
    add_piece(lay, h->fixup_offset, lay->fixups,
              sizeof(cds_fixup) * h->fixup_count);
    add_piece(lay, region_base[R_SEED], w->region[R_SEED].data, h->seed_size);
    for (int r = 0; r < CDS_NREGIONS; r++) {
        add_piece(lay, region_base[r], w->region[r].data, w->region[r].len);
    }
    PyMem_RawFree(order);
    return 0;

error:
    PyMem_RawFree(order);
    PyMem_RawFree(strtab.data);
    _PyCDS_LayoutClear(lay);
    return -1;
}

void
_PyCDS_LayoutClear(_PyCDS_Layout *lay)
{
    PyMem_RawFree(lay->index);
    PyMem_RawFree(lay->strtab);
    PyMem_RawFree(lay->relocs);
    PyMem_RawFree(lay->fixups);
    memset(lay, 0, sizeof(*lay));
}
