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
   not tampering. */
uint64_t
_PyCDS_Checksum(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t a0 = h, a1 = h ^ CDS_CK_P1, a2 = h ^ CDS_CK_P2, a3 = ~h;
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
    uint64_t x = (uint64_t)len * CDS_CK_P1;
    x = _PyCDS_Rotl64(x ^ (a0 + _PyCDS_Rotl64(b0, 23)), 31) * CDS_CK_P2;
    x = _PyCDS_Rotl64(x ^ (a1 + _PyCDS_Rotl64(b1, 23)), 31) * CDS_CK_P2;
    x = _PyCDS_Rotl64(x ^ (a2 + _PyCDS_Rotl64(b2, 23)), 31) * CDS_CK_P2;
    x = _PyCDS_Rotl64(x ^ (a3 + _PyCDS_Rotl64(b3, 23)), 31) * CDS_CK_P2;
    x ^= x >> 33;
    x *= CDS_CK_P1;
    x ^= x >> 29;
    return x;
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
