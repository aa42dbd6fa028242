"""What this machine charges for the first touch of a page.

Usage:

    python Tools/pycds/pagecost.py [--mb N] [--rounds N]

Start-up time is not only instructions: every page a process touches for
the first time costs a page fault or a page-table update, and in a virtual
machine often a trap to the hypervisor as well.  Stock CPython and this
interpreter touch about as many pages (the archive's copies take the place
of the objects that unmarshalling makes), so that cost is common to both
and pulls their time ratio towards 1, below the instruction ratio.  This
prints the cost per 4 KiB page of:

* a fresh anonymous page, written (a page fault, then the write);
* a fresh anonymous page made present first with MADV_POPULATE_WRITE (as
  the archive's blocks and the object allocator's pools are), then written
  (the madvise() call included);
* a page of a file in the page cache, mapped and read (the default
  archive, --file, or with --written a file written for the purpose);
* a page written before (the loop's own cost, subtracted from the others);
* with --huge, anonymous memory under MADV_HUGEPAGE (transparent huge
  pages, where the kernel gives them).

Multiply by the pages a run touches (the Rss of /proc/self/smaps_rollup
at its end, by kind) to see how much of its time they are.  Best of
--rounds rounds.
"""

import argparse
import mmap
import os
import sys
import tempfile
import time

PAGE = 4096
MADV_POPULATE_WRITE = 23        # Linux 5.14; not in the mmap module


def touch(m, size, write=True):
    t0 = time.perf_counter_ns()
    if write:
        for off in range(0, size, PAGE):
            m[off] = 1
    else:
        for off in range(0, size, PAGE):
            m[off]
    return time.perf_counter_ns() - t0


def anonymous(size, populate=False, huge=False):
    """ns to write one byte in each page of fresh memory, and to do it
    again (the loop alone)"""
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        try:
            if huge:
                m.madvise(mmap.MADV_HUGEPAGE)
            t0 = time.perf_counter_ns()
            if populate:
                m.madvise(MADV_POPULATE_WRITE)
        except (OSError, AttributeError):    # an older kernel, no THP
            return None, None
        first = time.perf_counter_ns() - t0 + touch(m, size)
        return first, touch(m, size)
    finally:
        m.close()


def page_cache(path, size):
    with open(path, 'rb') as f:
        m = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE,
                      prot=mmap.PROT_READ)
    try:
        return touch(m, size, write=False), touch(m, size, write=False)
    finally:
        m.close()


def default_archive():
    try:
        import _cds
    except ImportError:
        return None
    for a in _cds.info()['archives']:
        if a['role'] == 'default' and a['path'] and os.path.isfile(a['path']):
            return a['path']
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--mb', type=int, default=16,
                        help='memory per measurement (default 16)')
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--file', help='the file to map (default: the '
                        "default archive of the interpreter that runs this, "
                        'else a file written for the purpose)')
    parser.add_argument('--written', action='store_true',
                        help='map a file written for the purpose, even '
                        'where there is a default archive')
    parser.add_argument('--huge', action='store_true',
                        help='also transparent huge pages')
    args = parser.parse_args()
    size = args.mb << 20
    kinds = {
        'fresh anonymous page, written (fault)': lambda: anonymous(size),
        'fresh anonymous page, populated, then written':
            lambda: anonymous(size, populate=True),
    }
    if args.huge:
        kinds['anonymous, transparent huge pages, written'] = \
            lambda: anonymous(size, huge=True)
    path = args.file or (None if args.written else default_archive())
    with tempfile.NamedTemporaryFile(prefix='pagecost-') as f:
        if path is None:
            # written as a file usually is: the kernel may give a file
            # written in one call larger pages, cheaper to map
            for _ in range(size >> 16):
                f.write(os.urandom(1 << 16))
            f.flush()
            path = f.name
        fsize = min(size, os.path.getsize(path)) // PAGE * PAGE
        with open(path, 'rb') as r:       # in the page cache
            while r.read(1 << 20):
                pass
        if fsize > 0:
            kinds['page-cache page, mapped and read'] = \
                lambda: page_cache(path, fsize)
        mapped = path if path != f.name else 'a file written for the purpose'
        best = {}
        for _ in range(args.rounds):
            for name, measure in kinds.items():
                first, again = measure()
                if first is None:
                    best[name] = None
                    continue
                n = (fsize if name.startswith('page-cache') else size) // PAGE
                cost = (first - again) / n
                best[name] = min(best.get(name, cost), cost)
                loop = again / n
                best['loop'] = min(best.get('loop', loop), loop)
    print(f'first touch of a 4 KiB page, ns (best of {args.rounds} rounds '
          f'over {args.mb} MiB; the loop\'s own {best.pop("loop"):.0f} ns '
          f'per page subtracted; the file mapped: {mapped}):')
    for name, cost in best.items():
        print(f'  {name:48} ' + ('refused by the kernel' if cost is None
                                 else f'{cost:8.0f}'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
