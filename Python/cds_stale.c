/* pycds: whether an archived source module is current, judged as stock
 * CPython judges a .pyc.
 *
 * Stock runs a timestamp .pyc when its header records the source's mtime
 * (seconds) and size; otherwise it reads the source: it compiles it (no
 * .pyc: -B, PYTHONDONTWRITEBYTECODE, an unwritable cache; stale stamps)
 * or compares its hash (a hash-based .pyc).  An archive entry records the
 * source's mtime (ns), size and hash at dump time, and the mtime and size
 * of the .pyc file the dump left.  The stamps must always match.  Where
 * stock would read the source, so does SHARE, and the hash must match
 * too, so that an edit that keeps size and mtime (touch -r, normalized
 * mtimes) never runs the old code where stock runs the new.  Where stock
 * would run the .pyc, the entry is current if the .pyc is the one the
 * dump saw; a .pyc written since (compileall -f after such an edit) may
 * hold other code, so the source hash decides.  -X cds_check_source
 * checks the hash of every entry.
 *
 * Errors: none.  Anything unexpected makes the entry stale, and the normal
 * import, which does what stock does, runs.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_pyhash.h"        // _Py_KeyedHash()
#include "pycore_pystate.h"       // _Py_GetConfig()
#include "cds_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>               // PATH_MAX
#include <sys/stat.h>
#include <unistd.h>

#ifndef PATH_MAX
#  define PATH_MAX 4096
#endif

/* importlib's _RAW_MAGIC_NUMBER: the first word of a .pyc, and the key of
   its source hash; 0 if unknown (then every .pyc is unusable) */
static long
raw_magic(void)
{
    static long magic = -1;
    if (magic == -1) {
        magic = PyImport_GetMagicNumber();
        if (magic == -1) {
            PyErr_Clear();
            magic = 0;
        }
    }
    return magic;
}

static int64_t
mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Read the whole regular file 'path', which must still have the size and
   mtime 'st' gave, and hash it as importlib.util.source_hash() does.
   0 on success; -1 if it cannot be read or changed meanwhile. */
static int
source_hash(const char *path, const struct stat *st, uint64_t *hash)
{
    struct stat now;
    int fd = _PyCDS_OpenRegular(path, &now);
    if (fd < 0) {
        return -1;
    }
    int ok = 0;
    size_t size = (size_t)now.st_size;
    char *data = NULL;
    if (now.st_size == st->st_size && mtime_ns(&now) == mtime_ns(st)
        && (data = PyMem_RawMalloc(size ? size : 1)) != NULL)
    {
        size_t got = 0;
        while (got < size) {
            ssize_t n = read(fd, data + got, size - got);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
        char extra;
        ok = got == size && read(fd, &extra, 1) == 0 && raw_magic() != 0;
        if (ok) {
            *hash = _Py_KeyedHash((uint64_t)raw_magic(), data,
                                  (Py_ssize_t)size);
        }
    }
    PyMem_RawFree(data);
    close(fd);
    return ok ? 0 : -1;
}

/* The .pyc importlib.util.cache_from_source() names for 'path' (which
   ends in ".py") in 'buf'; -1 where stock would not use one there. */
static int
cache_path(const char *path, char *buf, size_t size)
{
    PyObject *prefix = PySys_GetObject("pycache_prefix");    /* borrowed */
    if (prefix != NULL && prefix != Py_None) {
        return -1;      /* stock looks elsewhere: read the source */
    }
    const char *tag = PyImport_GetMagicTag();
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t stem = strlen(base);
    if (tag == NULL || stem < 3 || strcmp(base + stem - 3, ".py") != 0) {
        return -1;
    }
    stem -= 3;
    char opt[32] = "";
    int level = _Py_GetConfig()->optimization_level;
    if (level > 0) {
        snprintf(opt, sizeof(opt), ".opt-%d", level);
    }
    /* DIR/__pycache__/STEM.TAG[.opt-N].pyc, without snprintf(): this
       runs for every module served from source */
    const char *parts[] = {"__pycache__/", base, ".", tag, opt, ".pyc"};
    size_t lens[] = {12, stem, 1, strlen(tag), strlen(opt), 4};
    size_t n = (size_t)(base - path);
    if (n >= size) {
        return -1;
    }
    memcpy(buf, path, n);
    for (size_t i = 0; i < Py_ARRAY_LENGTH(parts); i++) {
        if (lens[i] >= size - n) {
            return -1;
        }
        memcpy(buf + n, parts[i], lens[i]);
        n += lens[i];
    }
    buf[n] = '\0';
    return 0;
}

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
           | ((uint32_t)p[3] << 24);
}

int
_PyCDS_SourceStampOf(const char *path, const struct stat *st,
                     _PyCDS_SourceStamp *stamp)
{
    memset(stamp, 0, sizeof(*stamp));
    stamp->mtime_ns = mtime_ns(st);
    stamp->size = (int64_t)st->st_size;
    char pyc[PATH_MAX];
    struct stat pst;
    if (cache_path(path, pyc, sizeof(pyc)) == 0 && stat(pyc, &pst) == 0
        && S_ISREG(pst.st_mode))
    {
        stamp->pyc_mtime_ns = mtime_ns(&pst);
        stamp->pyc_size = (int64_t)pst.st_size;
    }
    return source_hash(path, st, &stamp->source_hash);
}

/* Whether stock would run the timestamp .pyc of 'path' (stat 'st')
   without reading the source, and it is the .pyc the dump saw. */
static int
timestamp_pyc_current(const cds_index_entry *e, const char *path,
                      const struct stat *st)
{
    char pyc[PATH_MAX];
    if (cache_path(path, pyc, sizeof(pyc)) < 0) {
        return 0;
    }
    struct stat pst;
    int fd = _PyCDS_OpenRegular(pyc, &pst);
    if (fd < 0) {
        return 0;
    }
    unsigned char head[16];
    ssize_t n;
    do {
        n = read(fd, head, sizeof(head));
    } while (n < 0 && errno == EINTR);
    close(fd);
    return pst.st_size == e->pyc_size && mtime_ns(&pst) == e->pyc_mtime_ns
           && n == (ssize_t)sizeof(head)
           && raw_magic() != 0
           && le32(head) == (uint32_t)raw_magic()
           && le32(head + 4) == 0                      /* not hash-based */
           && le32(head + 8) == (uint32_t)st->st_mtim.tv_sec
           && le32(head + 12) == (uint32_t)st->st_size;
}

/* NULL if the source entry 'e' may be served for the file 'path', else
   why not.  *hashed is set to 1 when the source was read and hashed. */
const char *
_PyCDS_SourceStale(const cds_index_entry *e, const char *path,
                   int check_always, int *hashed)
{
    struct stat st;
    *hashed = 0;
    if (stat(path, &st) != 0) {
        return "the source is gone";
    }
    if (st.st_size != e->size || mtime_ns(&st) != e->mtime_ns) {
        return "changed since the dump";
    }
    if (!check_always && timestamp_pyc_current(e, path, &st)) {
        return NULL;
    }
    uint64_t hash;
    *hashed = 1;
    if (source_hash(path, &st, &hash) < 0) {
        return "cannot read the source";
    }
    return hash == e->source_hash ? NULL : "source hash differs from the dump";
}
