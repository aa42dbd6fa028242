/* pycds: the archive file -- write a laid-out archive, open, validate and
 * map one.
 *
 * Writing: the layout made by the builder (cds_builder.c) goes to a
 * temporary file (cds_fileio.c); the "complete" marker of the header is
 * written last, after everything else is on disk, then the file replaces
 * the old archive.
 *
 * Reading: an archive another user could have written is not read (see
 * check_owner()), and nothing of the file is used before the header is
 * validated
 * (magic, version, complete marker, checksum, the build fingerprint, -O
 * level, size, and every table and region within the file, in order), and
 * nothing of the index before its checksum and its entries' bounds are.
 * What the index entries point at is checked per module when the module is
 * prepared (cds_share.c).
 *
 * Errors: writing returns -1 with errno set; mapping returns NULL on
 * success and otherwise the reason the archive is not used (a constant
 * string).  Neither raises.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_pystate.h"       // _Py_GetConfig()
#include "cds_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#  define MADV_POPULATE_WRITE 23      /* Linux 5.14 */
#endif

void
_PyCDS_Populate(void *addr, size_t len)
{
    static int supported = 1;
    if (!supported || len == 0) {
        return;
    }
    int saved_errno = errno;
    if (madvise(addr, len, MADV_POPULATE_WRITE) < 0 && errno == EINVAL) {
        supported = 0;
    }
    errno = saved_errno;
}

/* --- writing ------------------------------------------------------------- */

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

int
_PyCDS_WriteArchiveFile(const char *path, const _PyCDS_Layout *lay)
{
    _PyCDS_TempFile t;
    if (_PyCDS_TempFileOpen(&t, path) < 0) {
        return -1;
    }
    uint64_t pos = 0;
    for (int i = 0; i < lay->npieces; i++) {
        assert(lay->piece[i].offset >= pos);
        if (write_zeros(t.fd, lay->piece[i].offset - pos) < 0
            || _PyCDS_WriteAll(t.fd, lay->piece[i].data,
                               lay->piece[i].len) < 0)
        {
            goto error;
        }
        pos = lay->piece[i].offset + lay->piece[i].len;
    }
    if (write_zeros(t.fd, lay->header.file_size - pos) < 0
        || fsync(t.fd) < 0)
    {
        goto error;
    }
    /* the marker last: a file without it was never finished */
    uint64_t complete = CDS_COMPLETE;
    if (pwrite(t.fd, &complete, 8, offsetof(cds_header, complete)) != 8) {
        goto error;
    }
    return _PyCDS_TempFileCommit(&t);

error:
    _PyCDS_TempFileAbort(&t);
    return -1;
}

/* --- validating ---------------------------------------------------------- */

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

/* Why the header 'h' of a file of 'file_size' bytes cannot be used, or
   NULL if it can. */
static const char *
check_header(const cds_header *h, uint64_t file_size)
{
    if (memcmp(h->magic, CDS_MAGIC, 8) != 0) {
        return "not a pycds archive (bad magic)";
    }
    if (h->format_version != CDS_FORMAT_VERSION
        || h->header_size != sizeof(cds_header))
    {
        return "unsupported archive format version";
    }
    if (h->complete != CDS_COMPLETE) {
        return "incomplete archive (the dump did not finish)";
    }
    cds_header copy = *h;
    copy.header_checksum = 0;
    copy.complete = 0;
    if (_PyCDS_Checksum(0, &copy, sizeof(copy)) != h->header_checksum) {
        return "header checksum mismatch (corrupt archive)";
    }
    uint8_t fp[32];
    _PyCDS_Fingerprint(fp);
    if (memcmp(fp, h->fingerprint, 32) != 0) {
        return "made by a different interpreter build";
    }
    if (h->optimize != _Py_GetConfig()->optimization_level) {
        return "made with a different optimization level (-O)";
    }
    if (file_size != h->file_size) {
        return "file size does not match the header (truncated?)";
    }
    /* every region within the file, in order, aligned (each bound checked
       before it is added to: no sum may wrap) */
    uint64_t size = h->file_size;
    if (h->module_count > size / sizeof(cds_index_entry)
        || h->index_offset != CDS_PAGE
        || h->strtab_offset != h->index_offset
                               + h->module_count * sizeof(cds_index_entry)
        || h->strtab_offset > size || h->strtab_size > size - h->strtab_offset
        || h->reloc_count > size / 8 || h->fixup_count > size / sizeof(cds_fixup)
        || h->reloc_offset > size
        || h->reloc_offset < h->strtab_offset + h->strtab_size
        || h->reloc_offset % 8 != 0
        || h->fixup_offset != h->reloc_offset + 8 * h->reloc_count
        || !regions_ok(h, size)
        || h->preferred_base % CDS_PAGE != 0)
    {
        return "inconsistent region offsets (corrupt archive)";
    }
    return NULL;
}

/* Why the mapped index cannot be used, or NULL if it can; count[k]: the
   entries of kind k + 1 (sorted by kind). */
static const char *
check_index(const char *base, const cds_header *h, uint64_t count[4])
{
    const cds_index_entry *index = (const cds_index_entry *)(base + h->index_offset);
    uint64_t c = _PyCDS_Checksum(0, index,
                                 h->module_count * sizeof(cds_index_entry));
    if (_PyCDS_Checksum(c, base + h->strtab_offset, h->strtab_size)
        != h->index_checksum)
    {
        return "index checksum mismatch (corrupt archive)";
    }
    for (uint64_t i = 0; i < h->module_count; i++) {
        const cds_index_entry *e = &index[i];
        if (e->name_off > h->strtab_size
            || e->name_len > h->strtab_size - e->name_off
            || e->path_off > h->strtab_size
            || e->path_len > h->strtab_size - e->path_off
            || e->kind < KIND_SOURCE || e->kind > KIND_STRING
            || (i > 0 && e->kind < index[i - 1].kind))
        {
            return "bad index entry (corrupt archive)";
        }
        count[e->kind - 1]++;
    }
    return NULL;
}

/* --- whose archive ------------------------------------------------------- */

/* Why an archive with status 'st' must not be used, as ssh refuses keys
   with loose permissions: one owned by another user than root or this
   process's, or writable by others (it runs as this process's code), in a
   directory others could swap it in (writable by them without the sticky
   bit, or owned by another user); NULL if it may be used. */
static const char *
check_owner(const char *path, const struct stat *st)
{
    uid_t me = geteuid();
    if (st->st_uid != 0 && st->st_uid != me) {
        return "owned by another user";
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        return "writable by other users";
    }
    char *dir = _PyCDS_DirectoryOf(path);
    if (dir == NULL) {
        return "out of memory";
    }
    struct stat dst;
    const char *reason = NULL;
    if (stat(dir, &dst) < 0) {
        reason = "cannot read its directory";
    }
    else if (dst.st_uid != 0 && dst.st_uid != me) {
        reason = "its directory is owned by another user";
    }
    else if ((dst.st_mode & (S_IWGRP | S_IWOTH)) && !(dst.st_mode & S_ISVTX)) {
        reason = "its directory is writable by other users";
    }
    PyMem_RawFree(dir);
    return reason;
}

/* --- mapping ------------------------------------------------------------- */

/* Map the whole file privately at 'want' if possible, else anywhere. */
static char *
map_file(int fd, uint64_t size, void *want)
{
    int flags = MAP_PRIVATE;
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
    return base == MAP_FAILED ? NULL : base;
}

const char *
_PyCDS_MapArchive(const char *path, int anywhere, _PyCDS_Map *map)
{
    memset(map, 0, sizeof(*map));
    map->fd = -1;
    const _PyCDS_Image *image = _PyCDS_GetImage();
    if (!image->found) {
        return "cannot locate the interpreter image";
    }
    struct stat st;
    int fd = _PyCDS_OpenRegular(path, &st);
    if (fd < 0) {
        return errno == ENOENT ? "no such file"
               : errno == EINVAL ? "not a regular file"
               : "cannot open the file";
    }
    cds_header h;
    const char *reason = check_owner(path, &st);
    if (reason != NULL) {
        /* not read at all */
    }
    else if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        reason = "truncated header";
    }
    else {
        reason = check_header(&h, (uint64_t)st.st_size);
    }
    if (reason != NULL) {
        close(fd);
        return reason;
    }
    /* -X cds_relocate: let the kernel choose, as when the preferred
       address is taken */
    char *base = map_file(fd, h.file_size,
                          anywhere ? NULL : (void *)(uintptr_t)h.preferred_base);
    uint64_t count[4] = {0, 0, 0, 0};
    reason = base == NULL ? "cannot map the file"
                          : check_index(base, &h, count);
    close(fd);
    if (reason != NULL) {
        if (base != NULL) {
            munmap(base, h.file_size);
        }
        return reason;
    }
    map->fd = -1;
    map->dev = st.st_dev;
    map->ino = st.st_ino;
    map->base = base;
    map->size = h.file_size;
    map->hdr = (const cds_header *)base;
    map->index = (const cds_index_entry *)(base + h.index_offset);
    map->modules = count[0] + count[1];
    map->regexes = count[2];
    map->strtab = base + h.strtab_offset;
    map->archive_delta = (intptr_t)((uintptr_t)base - h.preferred_base);
    map->image_delta = (intptr_t)image->bias;
    map->path = path;
    return NULL;
}

/* The file is open only while a module is read, as stock CPython has a
   .pyc file open only while it reads it: a descriptor left open would show
   in the process (os.listdir('/proc/self/fd'), a child's inherited
   descriptors).  Opened again by its path, it is used only if it is still
   the mapped file; otherwise the bytes come from the mapping. */
void
_PyCDS_MapOpen(_PyCDS_Map *map)
{
    struct stat st;
    int fd = _PyCDS_OpenRegular(map->path, &st);
    if (fd >= 0 && (st.st_dev != map->dev || st.st_ino != map->ino)) {
        close(fd);
        fd = -1;
    }
    map->fd = fd;
    if (fd >= 0 && map->bounce == NULL) {
        map->bounce = PyMem_RawMalloc(CDS_BOUNCE);
    }
}

void
_PyCDS_MapClose(_PyCDS_Map *map)
{
    if (map->fd >= 0) {
        close(map->fd);
        map->fd = -1;
    }
}

/* Nothing runs between _PyCDS_MapOpen() and the reads but another
   thread (os.closerange() releases the GIL): a read that fails comes from
   the mapping, and whatever is read is checksummed after.

   The file is read from the page cache without mapping (and so faulting
   in and later dropping) its pages, into a small buffer that is reused
   (present and cached after the first module); the bytes are summed as
   they are copied on to their block.  pread() straight into the block
   cost more in a paravirtualized guest, where a fresh page that the
   kernel writes and user space then reads is made present for each
   (Doc/library/cds.rst gives the figures).  The sum is computed from the bytes written, so what is checked is what
   is used. */
void
_PyCDS_MapRead(const _PyCDS_Map *map, void *to, uint64_t offset,
               uint64_t len, uint64_t *sum)
{
    _PyCDS_Sum s;
    if (sum != NULL) {
        _PyCDS_SumInit(&s, *sum);
    }
    char *dst = to;
    uint64_t off = offset, left = len;
    int from_file = map->fd >= 0;
    while (left > 0) {
        size_t chunk = left < CDS_BOUNCE ? (size_t)left : CDS_BOUNCE;
        char *buf = map->bounce != NULL ? map->bounce : dst;
        const char *src = map->base + off;
        if (from_file && pread(map->fd, buf, chunk, (off_t)off)
                         == (ssize_t)chunk) {
            src = buf;
        }
        else {
            from_file = 0;
        }
        /* CDS_BOUNCE is a whole number of blocks: only the last chunk
           has a rest */
        size_t whole = chunk / 32 * 32;
        if (sum == NULL) {
            if (src != dst) {
                memcpy(dst, src, chunk);
            }
        }
        else {
            _PyCDS_SumCopy(&s, src != dst ? dst : NULL, src, whole / 32);
            if (chunk > whole) {
                *sum = _PyCDS_SumFinal(&s, src != dst ? dst + whole : NULL,
                                       src + whole, chunk - whole, len);
            }
        }
        dst += chunk;
        off += chunk;
        left -= chunk;
    }
    if (sum != NULL && len % 32 == 0) {
        *sum = _PyCDS_SumFinal(&s, NULL, "", 0, len);
    }
}

void
_PyCDS_UnmapArchive(_PyCDS_Map *map)
{
    if (map->base != NULL) {
        munmap(map->base, map->size);
        _PyCDS_MapClose(map);
    }
    PyMem_RawFree(map->bounce);
    memset(map, 0, sizeof(*map));
}
