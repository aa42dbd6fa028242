"""Mutation fuzzer of pycds archives and module lists.

Usage (from the top of a built tree):

    ./python Tools/pycds/fuzz --seconds N [--seed S] [--jobs J]
        [--targets header,index,strtab,records,objects,list] [--out DIR]
        [--timeout T] [--replay CASE] [--strict] [--keep] [--format PATH]

Set-up, in a temporary directory: a small application (a package of a few
modules: classes, closures, comprehensions, generators, frozensets and
constants of every archived type, f-strings, non-ASCII strings and
identifiers) is traced and dumped into an archive, with explicit
-X cds_list= and -X cds_archive= paths, and its output without the archive
(-X cds=off) is the baseline.

Then, until the time is up, each *case* makes a mutated copy of the archive
(or of the module list) and runs the interpreter on it in subprocesses with
a timeout: share mode with -X cds_verbose and a random choice of
-X cds_relocate (the relocation path), -X cds_verify (the deep checks),
-X cds_protect (and -X cds_check_source where the build has it); for the
module list, a dump of the mutated list (and a share run of the archive it
wrote) and a trace that merges into it.  The targets:

  header   bit, byte and field mutations of the header page, with and
           without header_checksum (and the checksums it covers) redone;
  index    fields of the module index, whole entries copied or swapped,
           bit flips; index_checksum redone or not;
  strtab   the string table (names, paths, their NULs); likewise;
  records  one module's relocation and fixup records: duplicated, swapped,
           moved out of the module or onto object headers, kinds changed,
           counts changed, with the module's checksums redone (and the
           records sorted again or not), so that they pass the checksums
           and reach the structural checks;
  objects  structural fields of one module's objects, its checksum redone:
           pointer slots (every slot has a relocation record: set to other
           objects, other modules, the preferred base plus anything, off by
           8 or 16, 0, huge values), object headers at pointer targets
           (ob_refcnt, ob_type, ob_size, a tuple's GC header), strings'
           cached hash, state bits, length and UTF-8 cache, and the code
           object fields the interpreter derives (co_nlocalsplus,
           co_framesize, ..., co_version, the runtime-only pointers) and
           the sizes of the tuples a code object indexes.  Never the
           bytecode, line or exception tables or the fields a .pyc also
           carries: those are trusted content once the checksums pass, as
           a .pyc's are (the documented trust boundary);
  list     the module list text: long lines, invalid UTF-8, NUL bytes,
           more than a million entries, bogus kinds and names, duplicates,
           truncated lines, entries and list paths that are FIFOs, links
           to /dev/zero, directories.

Outcomes: *served* (the baseline output, the archive used), *refused* (the
baseline output, the archive or a module not used), *error* (another output
or exit status where the mutation may change what the program runs: forged
content), *undetected* (another output where it may not: damage the
checksums should have caught, or fields documented as reset), *crash*
(killed by a signal, a timeout, a sanitizer report, a Python traceback that
mentions cds internals, or "Fatal Python error" but as the start-up failure
forged content may cause), and *unchecked*: a crash whose mutations lie
where the documented checks do not look with the run's options or on
trusted content
(which whole object of the module a constant is, a shorter bytecode: what a
forged .pyc can do to stock CPython too): reported, saved, not counted as a
crash but with --strict.  Crashes are saved with their input, output and a cmd.sh
that reruns them under --out (default: fuzz-crashes in the work directory,
which is then kept), the others under OUT/unchecked and OUT/undetected.
Case N of a seed is always the same mutation of the same baseline
(--replay N reruns it alone and shows it), whatever --jobs is.  A run
stops early if the interpreter binary changes under it (a rebuild).

The archive's layout comes from Lib/test/test_cds/format.py (the HEADER,
ENTRY and FIXUP structs, their field names, the checksums), read at run
time, so that the fuzzer follows format changes; --format PATH uses another
copy of that reader (to fuzz a binary built from another revision).  What
format.py does not describe (the object layouts of CPython 3.13 on 64-bit
Linux) is checked against the archive at set-up; a mismatch turns the
mutations that rely on it off, with a warning.

Exit status: 0 no crash, 1 a crash was found, 2 the set-up failed.

The modules, each importing only those below it: driver (set-up, cases,
outcomes, report, command line); tables, objects, lists (the mutators of
each target); mutant (a mutated archive, the value pickers); model (the
baseline archive and its layout); runner and app (the runs and the
application, imported by the driver only).
"""

# What Lib/test/test_cds/test_fuzz.py and scripts that rebuild a case use
# (sys.path.insert(0, 'Tools/pycds'); import fuzz).
from .driver import (ARCHIVE_MUTATORS, TARGETS, Fuzzer, FuzzerBug,
                     SetupError, main, parse_args)
from .model import (CODE_FIELDS, GC_HEAD, LEVELS, M64, OB_REFCNT, OB_SIZE,
                    OB_TYPE, ST_ASCII, ST_COMPACT, ST_INTERNED,
                    ST_KIND_SHIFT, ST_STATIC, STR_HASH, STR_LENGTH,
                    STR_STATE, STR_UTF8, STR_UTF8_LENGTH, TUPLE_ITEMS, Model,
                    code_int, get, put)
from .mutant import Mutant
from .runner import rmtree, write_private

__all__ = [
    'ARCHIVE_MUTATORS', 'TARGETS', 'Fuzzer', 'FuzzerBug', 'SetupError',
    'main', 'parse_args',
    'CODE_FIELDS', 'GC_HEAD', 'LEVELS', 'M64', 'OB_REFCNT', 'OB_SIZE',
    'OB_TYPE', 'ST_ASCII', 'ST_COMPACT', 'ST_INTERNED', 'ST_KIND_SHIFT',
    'ST_STATIC', 'STR_HASH', 'STR_LENGTH', 'STR_STATE', 'STR_UTF8',
    'STR_UTF8_LENGTH', 'TUPLE_ITEMS', 'Model', 'code_int', 'get', 'put',
    'Mutant', 'rmtree', 'write_private',
]
