/* pycds: -X cds_protect -- map the archive's never-written parts read-only.
 *
 * The header, index, relocations, fixups and the cold region are mapped
 * read-only; a write to them raises SIGSEGV, and this handler names the
 * archive, the file offset and the module, then hands the fault to the
 * handler installed before it (faulthandler's, with -X faulthandler, which
 * dumps the traceback) or the default action.  It is installed just before
 * site runs, after -X faulthandler's; a handler installed later (by
 * faulthandler.enable()) sees faults first and, as it chains to this one
 * with raise(), without their address: the traceback is all there is.
 *
 * Errors: a protection that cannot be set is logged (-X cds_verbose) and
 * the archive is used unprotected.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "cds_internal.h"

#include <errno.h>
#include <signal.h>               // sigaction()
#include <sys/mman.h>
#include <unistd.h>

/* The archive being protected (the handler reads it) */
/* the protected archives: the application's and the base */
static const _PyCDS_Map *protected_maps[2];

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
    const _PyCDS_Map *m = protected_maps[0];
    if (m == NULL || addr < (uintptr_t)m->base
        || addr >= (uintptr_t)m->base + m->size)
    {
        m = protected_maps[1];
    }
    if (info->si_code <= 0) {
        /* sent by kill() or raise(): what the previous disposition does */
        sigaction(signum, &protect_previous, NULL);
        raise(signum);
        return;
    }
    if (m != NULL && addr >= (uintptr_t)m->base
        && addr < (uintptr_t)m->base + m->size) {
        uint64_t off = addr - (uintptr_t)m->base;
        char msg[1024];
        size_t n = fmt_str(msg, 0, sizeof(msg), "Fatal Python error: cds: "
                           "write to the read-only part of archive '");
        n = fmt_str(msg, n, sizeof(msg), m->path);
        n = fmt_str(msg, n, sizeof(msg), "' at file offset ");
        n = fmt_hex(msg, n, sizeof(msg), off);
        const cds_header *h = m->hdr;
        uint64_t cold = h->region_offset[R_COLD];
        if (off >= cold && off < cold + h->region_size[R_COLD]) {
            n = fmt_str(msg, n, sizeof(msg), " (cold region");
            for (uint64_t i = 0; i < h->module_count; i++) {
                const cds_index_entry *e = &m->index[i];
                if (off >= e->range[R_COLD - 1][0]
                    && off < e->range[R_COLD - 1][1]) {
                    n = fmt_str(msg, n, sizeof(msg), ", an object of module ");
                    n = fmt_str(msg, n, sizeof(msg), m->strtab + e->name_off);
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

void
_PyCDS_ProtectRange(const _PyCDS_Map *m, uint64_t start, uint64_t end,
                    int writable)
{
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    start &= ~(uint64_t)(CDS_PAGE - 1);
    end = (end + CDS_PAGE - 1) & ~(uint64_t)(CDS_PAGE - 1);
    if (end > start && mprotect(m->base + start, end - start, prot) < 0) {
        _PyCDS_Log(1, "cannot change the protection of archive pages: %s",
                   strerror(errno));
    }
}

void
_PyCDS_InstallFaultHandler(void)
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

void
_PyCDS_ProtectArchive(const _PyCDS_Map *m)
{
    protected_maps[protected_maps[0] != NULL] = m;
    /* the header, index, relocations, fixups and the cold region */
    _PyCDS_ProtectRange(m, 0, m->hdr->region_offset[0], 0);
    _PyCDS_ProtectRange(m, m->hdr->region_offset[R_COLD], m->size, 0);
}

