"""Archives, module lists and their temporary and lock files as untrusted
input: files in directories other users can write must not redirect a
write, hang the process or exhaust its memory (issue 12, first step)."""

import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (
    AppTestCase, INFO, LIST_HEADER, clean_env, dump_args, read_list,
    run_python, trace_args, write_list)

TIMEOUT = 60        # what a hang would exceed; none of these takes long


class WhoseArchiveTests(AppTestCase):
    """An archive another user could have written is not mapped: it runs
    as this process's code."""

    ARCHIVE_PER_CLASS = True

    def copy(self, mode=0o644, dir_mode=0o700):
        d = tempfile.mkdtemp(dir=self.scratch)
        path = os.path.join(d, 'app.cds')
        shutil.copyfile(self.archive, path)
        os.chmod(path, mode)
        os.chmod(d, dir_mode)
        return path

    def reason(self, archive):
        r, info = self.share_info('-X', 'cds_verbose', archive=archive)
        return info['reason'] if not info['active'] else None

    def test_own_archive_used(self):
        self.assertIsNone(self.reason(self.copy()))
        # a sticky directory others can write (as /tmp) is fine
        self.assertIsNone(self.reason(self.copy(dir_mode=0o1777)))

    def test_writable_by_others(self):
        self.assertEqual(self.reason(self.copy(mode=0o666)),
                         'writable by other users')
        self.assertEqual(self.reason(self.copy(mode=0o664)),
                         'writable by other users')

    def test_directory_writable_by_others(self):
        self.assertEqual(self.reason(self.copy(dir_mode=0o777)),
                         'its directory is writable by other users')

    @unittest.skipUnless(os.geteuid() == 0, 'needs root to give a file away')
    def test_planted_by_another_user(self):
        # another user's archive where this process looks (a shared
        # directory): never mapped, whatever it holds
        import pwd
        nobody = pwd.getpwnam('nobody')
        path = self.copy(dir_mode=0o1777)
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.assertEqual(self.reason(path), 'owned by another user')
        r = self.python('-c', 'import _cds, json; print(json.dumps(_cds.info()))',
                        env=clean_env(PYTHONCDS='share',
                                      PYTHONCDSARCHIVE=path))
        self.assertFalse(json.loads(r.stdout)['active'])


class SharedStringFieldTests(AppTestCase):
    """The fields of a shared string that the process writes (the cached
    hash, the interned state) are outside every checksum: whatever the file
    holds there, the program runs as without the archive."""

    ARCHIVE_PER_CLASS = True

    def damaged(self, change):
        """A copy of the archive with change(data, offset) applied to every
        shared string (but the start-up ones) that cdsapp's modules use."""
        with open(self.archive, 'rb') as f:
            data = bytearray(f.read())
        h = cdsformat.read_header(data)
        seed_end = h['str_offset'] + (h['seed_size'] + 15) // 16 * 16
        targets = set()
        for e in cdsformat.read_index(data):
            if not e['name'].startswith('cdsapp'):
                continue
            for off, kind in cdsformat.fixups(data, e):
                if kind == 'intern':
                    target, = struct.unpack_from('<Q', data, off)
                    target -= h['preferred_base']
                    if target >= seed_end:
                        targets.add(target)
        self.assertGreater(len(targets), 20)
        for t in targets:
            change(data, t)
        # still valid: no checksum covers these fields
        self.assertEqual(cdsformat.validate(data), [])
        path = os.path.join(self.scratch, 'damaged.cds')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def check_runs_as_without(self, archive):
        r = self.share(self.main, archive=archive)
        self.assertEqual(r.stdout, self.expected)
        r, info = self.share_info(code=self.app_code('import cdsapp.shapes'),
                                  archive=archive)
        self.assertTrue(info['active'])
        self.assertGreater(info['served'], 0)

    def test_cached_hash(self):
        # a wrong cached hash would file the identifiers under the wrong
        # hash in the interned dict and in the namespaces that use them
        def change(data, t):
            struct.pack_into('<q', data, t + 24, 0x5eed)
        self.check_runs_as_without(self.damaged(change))


# PyCodeObject field offsets (64-bit 3.13, Include/cpython/code.h)
CO_CONSTS, CO_NAMES, CO_FRAMESIZE, CO_FILENAME, CO_LINETABLE = (
    24, 32, 76, 112, 136)


class ForgedArchiveTests(AppTestCase):
    """Archives whose checksums were recomputed after a change (what an
    attacker can do with the documented algorithm): the forged module is
    refused, the rest of the program runs, nothing crashes."""

    ARCHIVE_PER_CLASS = True

    def forge(self, mutate, name):
        data = bytearray(self.good)
        h = cdsformat.read_header(data)
        entries = cdsformat.read_index(data)
        i, e = next((i, e) for i, e in enumerate(entries) if e['name'] == name)
        mutate(data, h, e)
        # every checksum redone
        e['checksum'] = cdsformat.module_checksum(data, e)
        rs = h['reloc_offset'] + 8 * e['reloc_start']
        e['reloc_checksum'] = cdsformat.checksum(
            data[rs:rs + 8 * e['reloc_count']])
        fields = dict(e, kind={'source': 1, 'frozen': 2}[e['kind']])
        cdsformat.ENTRY.pack_into(
            data, h['index_offset'] + i * cdsformat.ENTRY.size,
            *(fields[k] for k in cdsformat.ENTRY_FIELDS))
        index = data[h['index_offset']:h['strtab_offset']]
        strtab = data[h['strtab_offset']:h['strtab_offset'] + h['strtab_size']]
        data = cdsformat.set_header(data, index_checksum=cdsformat.checksum(
            strtab, cdsformat.checksum(index)))
        path = os.path.join(self.scratch, 'forged.cds')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def check_refused(self, mutate, name='cdsapp.shapes', relocate=False,
                      options=()):
        path = self.forge(mutate, name)
        options = [*options, *(['-X', 'cds_relocate'] if relocate else [])]
        r = self.share('-X', 'cds_verbose', *options, self.main,
                       archive=path, check=False, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, self.expected)
        self.assertRegex(r.stderr, f'cds: module {name}: .*(corrupt archive)')
        return r

    @staticmethod
    def u64(data, off):
        return struct.unpack_from('<Q', data, off)[0]

    def test_entry_code_is_not_code(self):
        def mutate(data, h, e):
            # the module's "code object" is its constants tuple
            e['code'] = self.u64(data, e['code'] + CO_CONSTS) - h['preferred_base']
        self.check_refused(mutate)

    def test_consts_is_bytes(self):
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + CO_CONSTS,
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(mutate)
        self.check_refused(mutate, relocate=True)

    def test_names_outside_the_archive(self):
        def mutate(data, h, e):
            struct.pack_into('<Q', data, e['code'] + CO_NAMES,
                             h['preferred_base'] + h['file_size'] + (1 << 30))
        self.check_refused(mutate)

    def test_frame_size(self):
        def mutate(data, h, e):
            off = e['code'] + CO_FRAMESIZE
            struct.pack_into('<i', data, off,
                             struct.unpack_from('<i', data, off)[0] + 100000)
        self.check_refused(mutate)

    def test_function_code(self):
        # a function's code object, reached through the module's constants
        def mutate(data, h, e):
            codes = [off for off, kind in cdsformat.fixups(data, e)
                     if kind == 'code']
            self.assertTrue(codes)
            for off in codes:
                struct.pack_into('<Q', data, off + CO_NAMES,
                                 self.u64(data, off + CO_FILENAME))
        self.check_refused(mutate)

    def test_frozenset_fixup_not_a_tuple(self):
        def mutate(data, h, e):
            sets = [off for off, kind in cdsformat.fixups(data, e)
                    if kind == 'frozenset']
            self.assertTrue(sets)
            struct.pack_into('<Q', data, sets[0],
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(mutate, name='cdsapp.consts')

    def test_deep_checks(self):
        # a name that is not a string, and a constant out of its place:
        # only -X cds_verify checks them one by one
        def name_is_bytes(data, h, e):
            names = self.u64(data, e['code'] + CO_NAMES) - h['preferred_base']
            struct.pack_into('<Q', data, names + 24 + 8,
                             self.u64(data, e['code'] + CO_LINETABLE))
        self.check_refused(name_is_bytes, options=['-X', 'cds_verify'])
        r = self.share('-X', 'cds_verify=2', '-c', 'pass', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('-X cds_verify', r.stderr)

    def test_fixup_offset_wraps_around(self):
        # an offset whose end wraps past 2**64 was taken as inside the
        # module, and the fixup wrote outside the mapping
        def mutate(data, h, e):
            k = [kind for off, kind in cdsformat.fixups(data, e)].index('code')
            fs = (h['fixup_offset']
                  + cdsformat.FIXUP.size * (e['fixup_start'] + k))
            struct.pack_into('<Q', data, fs, (1 << 64) - 8)
        self.check_refused(mutate)

    def test_relocation_applied_twice(self):
        # the record of co_consts replaced by a second one of co_names:
        # co_names moves twice, co_consts not at all
        def mutate(data, h, e):
            rs = h['reloc_offset'] + 8 * e['reloc_start']
            recs = [self.u64(data, rs + 8 * k) for k in range(e['reloc_count'])]
            k_consts = recs.index(e['code'] + CO_CONSTS)
            names = recs.index(e['code'] + CO_NAMES)
            struct.pack_into('<Q', data, rs + 8 * k_consts, recs[names])
        self.check_refused(mutate, relocate=True)

    def check_bad_relocations(self, mutate):
        # the records of a module must be strictly ascending: a record
        # given twice would move its slot twice
        def checked(data, h, e):
            mutate(data, h, e)
            self.assertTrue(any('relocations not strictly ascending' in p
                                for p in cdsformat.validate(data)))
        r = self.check_refused(checked, relocate=True)
        self.assertIn('cds: module cdsapp.shapes: bad relocation '
                      '(corrupt archive)', r.stderr)

    def relocation_records(self, data, h, e):
        rs = h['reloc_offset'] + 8 * e['reloc_start']
        return rs, [self.u64(data, rs + 8 * k) for k in range(e['reloc_count'])]

    def test_relocation_records_duplicated(self):
        # a record of a slot that the structural checks do not look at
        # (the last one: an item of a constant) given twice, in place of
        # its neighbour's
        def mutate(data, h, e):
            rs, recs = self.relocation_records(data, h, e)
            self.assertGreater(len(recs), 2)
            struct.pack_into('<Q', data, rs + 8 * (len(recs) - 2), recs[-1])
        self.check_bad_relocations(mutate)

    def test_relocation_records_unsorted(self):
        # the same records in another order: each slot still moved once,
        # but the order is part of the format
        def mutate(data, h, e):
            rs, recs = self.relocation_records(data, h, e)
            struct.pack_into('<QQ', data, rs, recs[1], recs[0])
        self.check_bad_relocations(mutate)


class PlantedFileTests(AppTestCase):
    """Nothing is read from the working directory unless named: an
    archive planted there (a shared /tmp) is not mapped."""

    ARCHIVE_PER_CLASS = True

    def test_archive_in_working_directory_not_mapped(self):
        planted = os.path.join(self.scratch, 'pycds.cds')
        shutil.copyfile(self.archive, planted)
        code = self.app_code('import cdsapp.shapes') + '\n' + INFO
        for args, env in [(('-X', 'cds=share'), None),
                          (('-X', 'cds'), None),
                          ((), clean_env(PYTHONCDS='share')),
                          ((), clean_env(PYCDSMODE='SHARE'))]:
            with self.subTest(args=args, env=env and 'PYTHONCDS'):
                r = run_python(*args, '-c', code, env=env, cwd=self.scratch)
                self.assertEqual(r.returncode, 0, r.stderr)
                info = json.loads(r.stdout.splitlines()[-1])
                self.assertFalse(info['active'])
                self.assertIsNone(info['archive'])
                self.assertEqual((info['modules'], info['served']), (0, 0))
        # the file itself is usable: named (relative to the working
        # directory), it is mapped
        r = run_python('-X', 'cds=share', '-X', 'cds_archive=pycds.cds',
                       '-c', code, cwd=self.scratch)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout.splitlines()[-1])
        self.assertTrue(info['active'])
        self.assertEqual(info['archive'], planted)
        self.assertGreater(info['served'], 0)


class TempAndLockFileTests(AppTestCase):

    def plant_temp_links(self, path, victim):
        """Symbolic links at the temporary names a writer of 'path' used to
        take (PATH.tmp.<pid>) for the next pids, all to 'victim'."""
        try:
            with open('/proc/sys/kernel/ns_last_pid') as f:
                first = int(f.read()) + 1
        except (OSError, ValueError):
            first = os.getpid()
        for pid in range(first, first + 3000):
            try:
                os.symlink(victim, f'{path}.tmp.{pid}')
            except FileExistsError:
                pass

    def test_trace_temp_file_links_not_followed(self):
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        self.plant_temp_links(self.lst, victim)
        self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        with open(victim) as f:
            self.assertEqual(f.read(), 'precious\n')
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])
        self.assertFalse(os.path.islink(self.lst))

    def test_dump_temp_file_links_not_followed(self):
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        self.python(*trace_args(self.lst), self.main)
        self.plant_temp_links(self.archive, victim)
        self.dump()
        with open(victim) as f:
            self.assertEqual(f.read(), 'precious\n')
        r, info = self.share_info()
        self.assertTrue(info['active'], r.stderr)

    def test_lock_file_symlink_not_followed(self):
        victim = os.path.join(self.scratch, 'nologin')
        os.symlink(victim, self.lst + '.lock')
        r = self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        self.assertFalse(os.path.exists(victim))
        self.assertIn('lock file', r.stderr)
        self.assertIn('symbolic link', r.stderr)

    def test_lock_file_private(self):
        self.python(*trace_args(self.lst), self.main)
        st = os.stat(self.lst + '.lock')
        self.assertEqual(st.st_mode & 0o077, 0, oct(st.st_mode))

    def test_loose_lock_file_made_private(self):
        with open(self.lst + '.lock', 'w'):
            pass
        os.chmod(self.lst + '.lock', 0o666)
        self.python(*trace_args(self.lst), self.main)
        self.assertEqual(os.stat(self.lst + '.lock').st_mode & 0o077, 0)
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])

    def test_held_lock_bounded_wait(self):
        fd = os.open(self.lst + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        t0 = time.monotonic()
        r = self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, TIMEOUT / 2)
        self.assertIn('another process holds its lock', r.stderr)
        self.assertFalse(os.path.exists(self.lst))


class DeadWriterTempFileTests(AppTestCase):
    """A writer killed before its rename (where O_TMPFILE is not there)
    leaves PATH.tmp.<pid>.<8 hex digits>; the next successful write of PATH
    removes those of dead writers: regular files of this user, whose pid
    is not running, untouched for over a minute.  Nothing else."""

    @staticmethod
    def dead_pid():
        p = subprocess.Popen([sys.executable, '-c', 'pass'])
        p.wait()
        try:
            os.kill(p.pid, 0)
        except ProcessLookupError:
            return p.pid
        raise unittest.SkipTest(f'pid {p.pid} reused at once')

    def plant(self, path):
        """Leftovers beside 'path': return (those to remove, those to
        keep)."""
        dead = self.dead_pid()
        old = time.time() - 120
        victim = os.path.join(self.scratch, 'victim')
        with open(victim, 'w') as f:
            f.write('precious\n')
        os.utime(victim, (old, old))

        def file(name, mtime=old):
            with open(name, 'w') as f:
                f.write('leftover\n')
            os.utime(name, (mtime, mtime))
            return name

        def link(name):
            os.symlink(victim, name)
            os.utime(name, (old, old), follow_symlinks=False)
            return name

        def directory(name):
            os.mkdir(name)
            os.utime(name, (old, old))
            return name

        other = os.path.join(os.path.dirname(path), 'other.cds')
        removed = [file(f'{path}.tmp.{dead}.0123abcd'),
                   file(f'{path}.tmp.{dead}.ffffffff')]
        kept = [
            # a live writer (this process), however old its file
            file(f'{path}.tmp.{os.getpid()}.89abcdef'),
            # a dead writer's, but recent
            file(f'{path}.tmp.{dead}.00000001', mtime=time.time()),
            # not regular files
            link(f'{path}.tmp.{dead}.00000002'),
            directory(f'{path}.tmp.{dead}.00000003'),
            # other names
            file(f'{path}.tmp.{dead}.0000004'),
            file(f'{path}.tmp.{dead}.0000000g'),
            file(f'{path}.tmp.{dead}.00000005x'),
            file(f'{path}.tmp.x{dead}.00000006'),
            file(f'{path}.tmp.{dead}'),
            file(f'{other}.tmp.{dead}.00000007'),
            victim,
        ]
        if os.geteuid() == 0:
            import pwd
            try:
                nobody = pwd.getpwnam('nobody')
            except KeyError:
                pass
            else:
                # another user's
                name = file(f'{path}.tmp.{dead}.00000008')
                os.chown(name, nobody.pw_uid, nobody.pw_gid)
                os.utime(name, (old, old))
                kept.append(name)
        return removed, kept

    def check(self, removed, kept):
        self.assertEqual([p for p in removed if os.path.lexists(p)], [])
        self.assertEqual([p for p in kept if not os.path.lexists(p)], [])
        with open(os.path.join(self.scratch, 'victim')) as f:
            self.assertEqual(f.read(), 'precious\n')

    def test_dump_removes_dead_writers_files(self):
        self.python(*trace_args(self.lst), self.main)
        removed, kept = self.plant(self.archive)
        # a dump that writes no archive (its list is missing) leaves them
        r = self.dump(lst=os.path.join(self.scratch, 'missing.lst'),
                      check=False)
        self.assertEqual(r.returncode, 1)
        self.check([], removed + kept)
        # one that writes it removes the dead writers' files
        self.dump()
        self.check(removed, kept)
        r, info = self.share_info()
        self.assertTrue(info['active'], r.stderr)

    def test_trace_removes_dead_writers_files(self):
        removed, kept = self.plant(self.lst)
        self.python(*trace_args(self.lst), self.main)
        self.check(removed, kept)
        self.assertIn('cdsapp', [e[0] for e in read_list(self.lst)])


class SpecialFileTests(AppTestCase):

    def fifo(self, name):
        path = os.path.join(self.scratch, name)
        os.mkfifo(path)
        return path

    def test_fifo_archive(self):
        fifo = self.fifo('a.cds')
        r, info = self.share_info('-X', 'cds_verbose', archive=fifo,
                                  timeout=TIMEOUT)
        self.assertFalse(info['active'])
        self.assertEqual(info['reason'], 'not a regular file')

    def test_fifo_list_trace(self):
        fifo = self.fifo('a.lst')
        r = self.python(*trace_args(fifo), self.main, timeout=TIMEOUT)
        self.assertIn('not a regular file', r.stderr)

    def test_fifo_list_dump(self):
        fifo = self.fifo('a.lst')
        r = self.dump(lst=fifo, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not a regular file', r.stderr)

    def test_dev_zero_list(self):
        r = self.dump(lst='/dev/zero', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not a regular file', r.stderr)
        r = self.python(*trace_args('/dev/zero'), '-c', 'pass',
                        timeout=TIMEOUT)
        self.assertIn('not a regular file', r.stderr)

    def test_long_line_list(self):
        lst = os.path.join(self.scratch, 'long.lst')
        with open(lst, 'wb') as f:
            f.write(b'x' * (1 << 20))
        r = self.dump(lst=lst, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('longer than', r.stderr)

    def test_special_and_foreign_list_entries_skipped(self):
        # entries whose paths fit their names but are a FIFO and a link to
        # /dev/zero (reading either would block or never end), and two
        # whose paths are not source files of the module at all
        fifo = self.fifo('mod.py')
        zero = os.path.join(self.scratch, 'zero.py')
        os.symlink('/dev/zero', zero)
        entries = [('zero', 'source', zero),
                   ('mod', 'source', fifo),
                   ('passwd', 'source', '/etc/passwd'),
                   ('nosuchmod', 'source', os.path.join(self.tmp, 'main.py'))]
        lst = os.path.join(self.scratch, 'special.lst')
        write_list(lst, entries)
        r = self.python('-X', 'cds_verbose', *dump_args(lst, self.archive),
                        timeout=TIMEOUT)
        self.assertIn('0 modules archived, 4 skipped', r.stderr)
        self.assertIn('zero: the source is not a regular file', r.stderr)
        self.assertIn('mod: the source is not a regular file', r.stderr)
        self.assertIn('passwd: the listed path is not a source file',
                      r.stderr)


class SmallerItemTests(AppTestCase):

    def test_relocate_zero_means_no(self):
        self.trace_and_dump()
        _, on = self.share_info('-X', 'cds_relocate=1', code='import json')
        _, off = self.share_info('-X', 'cds_relocate=0', code='import json')
        self.assertFalse(on['mapped_at_preferred_address'])
        self.assertTrue(off['mapped_at_preferred_address'])
        r = self.python('-X', 'cds_relocate=maybe', '-c', 'pass', check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('-X cds_relocate', r.stderr)

    def test_info_non_utf8_archive_path(self):
        name = os.fsdecode(b'arch\xff.cds')
        r = self.python('-c', INFO, env=clean_env(
            PYTHONCDS='share',
            PYTHONCDSARCHIVE=os.path.join(self.scratch, name)))
        info = json.loads(r.stdout)
        self.assertTrue(info['archive'].endswith(name))

    def test_invalid_utf8_list_name(self):
        lst = os.path.join(self.scratch, 'bad.lst')
        with open(lst, 'wb') as f:
            f.write(LIST_HEADER.encode() + b'\n')
            f.write(b'mod\xff\tsource\t/tmp/mod.py\n')
        r = self.dump(lst=lst, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('line 2: not a module list entry', r.stderr)
        self.assertNotIn('Traceback', r.stderr)

    def test_long_list_merge(self):
        # a trace merged into a 100,000-entry list: linear, not quadratic
        # (the old merge took about two minutes)
        entries = [(f'm{i}', 'source', f'/nonexistent/m{i}.py')
                   for i in range(100_000)]
        write_list(self.lst, entries)
        t0 = time.monotonic()
        self.python(*trace_args(self.lst), self.main, timeout=TIMEOUT)
        self.assertLess(time.monotonic() - t0, TIMEOUT / 2)
        merged = read_list(self.lst)
        self.assertEqual(merged[:100_000], entries)
        self.assertIn('cdsapp', [e[0] for e in merged[100_000:]])


if __name__ == '__main__':
    unittest.main()
