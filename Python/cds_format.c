/* pycds: the archive's checksum and the build identity an archive is tied
 * to (its fingerprint of the interpreter image).
 *
 * Both sides of the format use these: the builder when it writes an
 * archive, the file map and SHARE when they validate one.  The checksum
 * algorithm is part of the format (Doc/library/cds-format.rst).
 *
 * Errors: none; a missing image is reported by _PyCDS_Image.found == 0.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_gc.h"            // PyGC_Head
#include "pycore_runtime.h"       // _PyRuntime
#include "cds_format.h"

#include <elf.h>
#include <link.h>                 // dl_iterate_phdr()

/* A fast 64-bit checksum: four lanes of Fletcher-style sums over 64-bit
   words (a += w; b += a: two additions per word, which the CPU overlaps),
   the tail zero-padded to a 32-byte block, then the lanes and the length
   mixed.  It detects damage (any single flipped bit, reordered words),
   not tampering.  _PyCDS_Checksum() is _PyCDS_SumInit(), _PyCDS_SumCopy()
   of the whole 32-byte blocks and _PyCDS_SumFinal() of the rest: copy
   mode sums the bytes as it copies them (cds_filemap.c). */
void
_PyCDS_SumInit(_PyCDS_Sum *s, uint64_t h)
{
    s->a[0] = h;
    s->a[1] = h ^ CDS_CK_P1;
    s->a[2] = h ^ CDS_CK_P2;
    s->a[3] = ~h;
    s->b[0] = s->b[1] = s->b[2] = s->b[3] = 0;
}

#if defined(__GNUC__)
/* The four lanes as two vector values (SSE2 registers on x86-64): the
   compiler keeps the sums in registers, which it does not do for the
   scalar loop below.  The same sums, so the same checksum. */
typedef uint64_t cds_pair __attribute__((vector_size(16)));

#define SUM_BLOCKS(COPY)                                                \
    for (; blocks > 0; blocks--, p += 32) {                             \
        cds_pair w0, w1;                                                \
        memcpy(&w0, p, 16);                                             \
        memcpy(&w1, p + 16, 16);                                        \
        COPY;                                                           \
        a0 += w0;                                                       \
        a1 += w1;                                                       \
        b0 += a0;                                                       \
        b1 += a1;                                                       \
    }

void
_PyCDS_SumCopy(_PyCDS_Sum *s, void *dst, const void *src, size_t blocks)
{
    const unsigned char *p = src;
    unsigned char *q = dst;
    cds_pair a0, a1, b0, b1;
    memcpy(&a0, s->a, 16);
    memcpy(&a1, s->a + 2, 16);
    memcpy(&b0, s->b, 16);
    memcpy(&b1, s->b + 2, 16);
    if (q != NULL) {
        SUM_BLOCKS((memcpy(q, &w0, 16), memcpy(q + 16, &w1, 16), q += 32))
    }
    else {
        SUM_BLOCKS((void)0)
    }
    memcpy(s->a, &a0, 16);
    memcpy(s->a + 2, &a1, 16);
    memcpy(s->b, &b0, 16);
    memcpy(s->b + 2, &b1, 16);
}
#undef SUM_BLOCKS
#else
void
_PyCDS_SumCopy(_PyCDS_Sum *s, void *dst, const void *src, size_t blocks)
{
    const unsigned char *p = src;
    unsigned char *q = dst;
    uint64_t a0 = s->a[0], a1 = s->a[1], a2 = s->a[2], a3 = s->a[3];
    uint64_t b0 = s->b[0], b1 = s->b[1], b2 = s->b[2], b3 = s->b[3];
    uint64_t w[4];
    for (size_t i = 0; i < blocks; i++, p += 32) {
        memcpy(w, p, 32);
        if (q != NULL) {
            memcpy(q, w, 32);
            q += 32;
        }
        a0 += w[0]; b0 += a0;
        a1 += w[1]; b1 += a1;
        a2 += w[2]; b2 += a2;
        a3 += w[3]; b3 += a3;
    }
    s->a[0] = a0; s->a[1] = a1; s->a[2] = a2; s->a[3] = a3;
    s->b[0] = b0; s->b[1] = b1; s->b[2] = b2; s->b[3] = b3;
}
#endif

uint64_t
_PyCDS_SumFinal(_PyCDS_Sum *s, void *dst, const void *src, size_t n,
                uint64_t len)
{
    /* the last block, 1 to 32 bytes (none of a whole number of blocks),
       zero-padded; a single zero block when len is 0 */
    if (n > 0 || len == 0) {
        unsigned char w[32] = {0};
        memcpy(w, src, n);
        if (dst != NULL) {
            memcpy(dst, w, n);
        }
        _PyCDS_SumCopy(s, NULL, w, 1);
    }
    uint64_t x = len * CDS_CK_P1;
    for (int i = 0; i < 4; i++) {
        x = _PyCDS_Rotl64(x ^ (s->a[i] + _PyCDS_Rotl64(s->b[i], 23)), 31)
            * CDS_CK_P2;
    }
    x ^= x >> 33;
    x *= CDS_CK_P1;
    x ^= x >> 29;
    return x;
}

uint64_t
_PyCDS_Checksum(uint64_t h, const void *data, size_t len)
{
    _PyCDS_Sum s;
    _PyCDS_SumInit(&s, h);
    _PyCDS_SumCopy(&s, NULL, data, len / 32);
    return _PyCDS_SumFinal(&s, NULL, (const char *)data + len / 32 * 32,
                           len % 32, len);
}

/* The index name of an entry found by a hash of its key (regular
   expressions, strings): 'letter' then the hash in 16 hex digits. */
void
_PyCDS_HashName(char letter, uint64_t h, char name[24])
{
    static const char digits[] = "0123456789abcdef";
    name[0] = letter;
    for (int i = 16; i >= 1; i--, h >>= 4) {
        name[i] = digits[h & 15];
    }
    name[17] = '\0';
}

/* --- the interpreter image ---------------------------------------------- */

static _PyCDS_Image image;

/* The GNU build ID note of the loaded object 'info', if it has one. */
static void
read_build_id(struct dl_phdr_info *info)
{
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
}

/* dl_iterate_phdr() callback: is this the object holding _PyRuntime? */
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
    read_build_id(info);
    return 1;
}

const _PyCDS_Image *
_PyCDS_GetImage(void)
{
    if (!image.found) {
        dl_iterate_phdr(find_image_cb, NULL);
    }
    return &image;
}

/* The ELF build ID of the image holding the runtime, plus the version,
   build information and the layouts the archive depends on. */
void
_PyCDS_Fingerprint(uint8_t out[32])
{
    (void)_PyCDS_GetImage();
    char info[1024];
    snprintf(info, sizeof(info), "%s|%s|%s|%d|%zu|%zu|%zu|%zu|%zu",
             Py_GetVersion(), Py_GetBuildInfo(), Py_GetCompiler(),
             CDS_FORMAT_VERSION, sizeof(PyCodeObject), sizeof(PyASCIIObject),
             sizeof(PyCompactUnicodeObject), sizeof(PyGC_Head),
             (size_t)(image.hi - image.lo));
    for (int i = 0; i < 4; i++) {
        uint64_t h = _PyCDS_Checksum((uint64_t)i, image.build_id,
                                     image.build_id_len);
        h = _PyCDS_Checksum(h, info, strlen(info));
        memcpy(out + 8 * i, &h, 8);
    }
}
