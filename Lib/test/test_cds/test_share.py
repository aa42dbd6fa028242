"""DUMP and SHARE: archives written and used end to end, in subprocesses."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import unittest

from test.test_cds import format as cdsformat
from test.test_cds.util import (NO_BASE, AppTestCase, clean_env, read_list,
                                share_args, unprivileged)

class WorkflowTests(AppTestCase):

    def test_same_output_and_served_from_archive(self):
        r = self.trace_and_dump()
        self.assertRegex(r.stderr, r'cds: dump: \d+ modules archived, \d+ skipped'
                                   r'(; \d+ regular expressions archived, '
                                   r'\d+ in the base archive, \d+ left to re)?'
                                   r'(; \d+ strings archived, \d+ in the base '
                                   r'archive, \d+ left to compile\(\))?; '
                                   r'\d+ objects, \d+ bytes, [\d.]+ s -> ')
        off = self.python(self.main)
        shared = self.share(self.main)
        self.assertEqual(shared.stdout, off.stdout)
        self.assertIn('boom from shapes', shared.stdout)

        listed = {name for name, kind, path in read_list(self.lst)
                  if kind in ('source', 'frozen')}
        code = self.app_code('''
            import cdsapp, cdsapp.shapes, _cds
            assert _cds.is_archived(cdsapp.shapes.make_adder.__code__)
            # a module's own code object is a heap copy that shares the
            # archived constants and tables
            mod = cdsapp.__spec__.loader.get_code("cdsapp")
            assert not _cds.is_archived(mod)
            assert _cds.is_archived(mod.co_linetable)
            assert not _cds.is_archived(compile("1", "", "eval"))
        ''')
        r, info = self.share_info(code=code)
        self.assertTrue(info['active'])
        self.assertGreaterEqual(info['served'], 3)
        self.assertEqual(info['stale'], 0)
        self.assertEqual(info['rejected'], 0)
        self.assertEqual(info['modules'], len(listed))

    def test_served_when_the_file_is_replaced(self):
        # Copy mode reads each module from the file while its path names
        # the mapped file, and from the mapping once it does not: the
        # same modules, checked the same way, with another file (here a
        # damaged copy) at the path.
        self.trace_and_dump()
        with open(self.archive, 'rb') as f:
            data = bytearray(f.read())
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
        damaged = self.archive + '.damaged'
        with open(damaged, 'wb') as f:
            f.write(data)
        code = self.app_code(f'''
            import os
            os.replace({damaged!r}, {self.archive!r})
            import cdsapp, cdsapp.shapes
            print(cdsapp.shapes.make_adder(2)(3))
        ''')
        r, info = self.share_info(code=code)
        self.assertEqual(r.stdout.splitlines()[0], '5')
        self.assertGreaterEqual(info['served'], 2)
        self.assertEqual(info['rejected'], 0)

    def test_every_traced_module_is_served(self):
        self.trace_and_dump()
        sources = [n for n, k, p in read_list(self.lst) if k == 'source']
        code = 'import runpy; runpy.run_path(%r)' % self.main
        r, info = self.share_info(code=code)
        self.assertGreaterEqual(info['served'], len(sources))
        self.assertEqual(info['stale'], 0)

    def test_dump_is_reproducible(self):
        self.trace_and_dump()
        with open(self.archive, 'rb') as f:
            first = f.read()
        self.dump()
        with open(self.archive, 'rb') as f:
            second = f.read()
        self.assertEqual(first, second)

    def test_dump_leaves_no_temporary_file(self):
        self.trace_and_dump()
        left = [f for f in os.listdir(self.tmp) if '.tmp.' in f]
        self.assertEqual(left, [])

    def test_dump_rejects_a_program(self):
        r = self.dump('-c', 'pass', check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn('takes no script', r.stderr)
        self.assertFalse(os.path.exists(self.archive))

    def test_dump_unwritable_target(self):
        self.trace_and_dump()
        target = os.path.join(self.tmp, 'no-such-dir', 'app.cds')
        r = self.dump(archive=target, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot write archive", r.stderr)
        self.assertIn(target, r.stderr)

    def test_dump_missing_or_garbage_list(self):
        missing = os.path.join(self.tmp, 'missing.lst')
        r = self.dump(lst=missing, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing, r.stderr)
        with open(self.lst, 'w') as f:
            f.write('json\tsource\t/x.py\nnot a list line\n')
        r = self.dump(check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn('line 2', r.stderr)
        self.assertFalse(os.path.exists(self.archive))

    def test_dump_skips_what_cannot_be_archived(self):
        os.makedirs(os.path.join(self.tmp, 'nspkg'))
        with open(os.path.join(self.tmp, 'broken.py'), 'w') as f:
            f.write('def broken(:\n')
        import _json
        lines = ['# pycds module list 1',
                 f'json\tsource\t{json.__file__}',
                 f'no_such_module\tsource\t{self.tmp}/no_such_module.py',
                 f'broken\tsource\t{self.tmp}/broken.py',
                 f'nspkg\tsource\t{self.tmp}/nspkg/__init__.py',
                 f'_json\tsource\t{getattr(_json, "__file__", "/nonexistent/_json.py")}',
                 'no_such_frozen\tfrozen',
                 'zipimport\tfrozen']
        with open(self.lst, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        r = self.dump('-X', 'cds_verbose')
        self.assertRegex(r.stderr, r'cds: dump: 2 modules archived, 5 skipped')
        self.assertIn('skipped no_such_module', r.stderr)
        self.assertIn('skipped broken: SyntaxError', r.stderr)
        self.assertIn('skipped nspkg', r.stderr)
        self.assertIn('skipped no_such_frozen', r.stderr)
        r, info = self.share_info(code='import json')
        self.assertEqual(info['modules'], 2)

    def test_tracebacks_inspect_and_attributes(self):
        self.trace_and_dump()
        code = self.app_code('''
            import sys, inspect, dis, io, marshal, pickle
            from cdsapp import shapes, consts
            print(inspect.getsource(shapes.make_adder))
            buf = io.StringIO()
            dis.dis(shapes.Point.norm, file=buf)
            print(buf.getvalue())
            co = shapes.make_adder.__code__
            print(list(co.co_lines()), list(co.co_positions())[:5])
            print(marshal.loads(marshal.dumps(co)) == co)
            print(co.replace(co_name="other").co_name, co.co_name)
            print(pickle.loads(pickle.dumps(shapes.make_adder)) is shapes.make_adder)
            # (a frozenset's iteration order depends on the hash seed)
            print(shapes.fail.__code__.co_qualname,
                  [sorted(c, key=repr) if isinstance(c, frozenset) else c
                   for c in consts.member.__code__.co_consts])
        ''')
        off = self.python('-c', code)
        shared = self.share('-c', code)
        self.assertEqual(shared.stdout, off.stdout)


class StalenessTests(AppTestCase):

    def setUp(self):
        super().setUp()
        self.trace_and_dump()
        self.shapes = os.path.join(self.tmp, 'cdsapp', 'shapes.py')
        self.probe = self.app_code('''
            from cdsapp import shapes
            print(getattr(shapes, "MARK", "old"))
        ''')

    def probe_run(self):
        r, info = self.share_info(code=self.probe)
        return r.stdout.splitlines()[0], info

    def test_unchanged_is_served(self):
        mark, info = self.probe_run()
        self.assertEqual((mark, info['stale']), ('old', 0))

    def test_edit_same_size(self):
        with open(self.shapes) as f:
            text = f.read()
        st = os.stat(self.shapes)
        new = text.replace('import dataclasses, math',
                           'import dataclasses, math; MARK = "new"', 1)
        new = new.replace('"boom from shapes"', '"boom"', 1)
        with open(self.shapes, 'w') as f:
            f.write(new)
        # same mtime, different size: still detected
        os.utime(self.shapes, ns=(st.st_atime_ns, st.st_mtime_ns))
        mark, info = self.probe_run()
        self.assertEqual(mark, 'new')
        self.assertEqual(info['stale'], 1)

    def test_edit_same_size_new_mtime(self):
        with open(self.shapes) as f:
            text = f.read()
        new = text.replace('sides = 4', 'sides = 5', 1)
        self.assertEqual(len(new), len(text))
        time.sleep(0.01)
        with open(self.shapes, 'w') as f:
            f.write(new)
        code = self.app_code('from cdsapp import shapes; print(shapes.Square.sides)')
        r, info = self.share_info(code=code)
        self.assertEqual(r.stdout.splitlines()[0], '5')
        self.assertEqual(info['stale'], 1)

    def test_touch(self):
        st = os.stat(self.shapes)
        os.utime(self.shapes, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        mark, info = self.probe_run()
        self.assertEqual((mark, info['stale']), ('old', 1))

    def test_truncate(self):
        open(self.shapes, 'w').close()
        mark, info = self.probe_run()
        self.assertEqual((mark, info['stale']), ('old', 1))   # empty module

    def test_delete(self):
        os.unlink(self.shapes)
        shutil.rmtree(os.path.join(self.tmp, 'cdsapp', '__pycache__'),
                      ignore_errors=True)
        r = self.share('-c', self.probe, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('ImportError', r.stderr)

    def test_shadowed_by_another_file(self):
        # a module earlier on sys.path wins, as with a normal import
        other = os.path.join(self.tmp, 'first')
        os.makedirs(os.path.join(other, 'cdsapp'))
        with open(os.path.join(other, 'cdsapp', '__init__.py'), 'w') as f:
            f.write('from cdsapp import shapes\n')
        with open(os.path.join(other, 'cdsapp', 'shapes.py'), 'w') as f:
            f.write('MARK = "shadow"\n')
        code = ('import sys; sys.path[:0] = [%r, %r]\n'
                'from cdsapp import shapes; print(shapes.MARK)\n' % (other, self.tmp))
        r, info = self.share_info(code=code)
        self.assertEqual(r.stdout.splitlines()[0], 'shadow')


class BadArchiveTests(AppTestCase):
    # each test damages a copy of the archive, in its scratch directory
    ARCHIVE_PER_CLASS = True

    def setUp(self):
        super().setUp()
        self.bad = os.path.join(self.scratch, 'bad.cds')

    def check_unusable(self, data, reason, **kwargs):
        bad = self.bad
        if data is not None:
            with open(bad, 'wb') as f:
                f.write(data)
        r = self.share('-X', 'cds_verbose', self.main, archive=bad, **kwargs)
        self.assertEqual(r.stdout, self.expected)
        self.assertIn(f"cds: archive '{bad}' not used: ", r.stderr)
        self.assertIn(reason, r.stderr)
        self.assertEqual(len([l for l in r.stderr.splitlines() if 'not used' in l]), 1)
        # silent without -X cds_verbose
        r = self.share(self.main, archive=bad, **kwargs)
        self.assertEqual((r.stdout, r.stderr), (self.expected, ''))

    def test_missing(self):
        self.check_unusable(None, 'no such file')

    def test_empty_and_garbage(self):
        self.check_unusable(b'', 'truncated header')
        self.check_unusable(b'\x7fELF' + bytes(500), 'bad magic')
        self.check_unusable(b'hello world\n' * 1000, 'bad magic')

    def test_directory(self):
        os.mkdir(self.bad)
        self.check_unusable(None, 'not a regular file')

    def test_truncated(self):
        self.check_unusable(self.good[:len(self.good) // 2], 'truncated')
        self.check_unusable(self.good[:100], 'truncated header')

    def test_incomplete(self):
        data = cdsformat.set_header(self.good, complete=0)
        self.check_unusable(data, 'incomplete archive')

    def test_corrupt_header(self):
        data = bytearray(self.good)
        data[100] ^= 0xFF      # inside a header field
        self.check_unusable(bytes(data), 'header checksum mismatch')

    def test_other_build(self):
        h = cdsformat.read_header(self.good)
        fp = bytearray(h['fingerprint'])
        fp[0] ^= 1
        data = cdsformat.set_header(self.good, fingerprint=bytes(fp))
        self.check_unusable(data, 'different interpreter build')

    def test_other_format_version(self):
        data = cdsformat.set_header(self.good, format_version=99)
        self.check_unusable(data, 'format version')

    def test_corrupt_index(self):
        h = cdsformat.read_header(self.good)
        data = bytearray(self.good)
        data[h['index_offset'] + 40] ^= 0x01
        self.check_unusable(bytes(data), 'index checksum mismatch')

    def run_damaged(self, data, *args):
        # the program's output is the same; return the archive's diagnostics
        bad = self.bad
        with open(bad, 'wb') as f:
            f.write(data)
        r = self.share('-X', 'cds_verbose', *args, self.main, archive=bad)
        self.assertEqual(r.stdout, self.expected)
        return bad, r.stderr

    def test_corrupt_module_objects(self):
        # a damaged module is not used; the others still are
        entries = cdsformat.read_index(self.good)
        victim = next(e for e in entries if e['name'] == 'cdsapp.shapes')
        data = bytearray(self.good)
        data[victim['cold_start'] + 24] ^= 0xFF
        bad, stderr = self.run_damaged(data)
        self.assertIn('module cdsapp.shapes: checksum mismatch', stderr)
        r, info = self.share_info(code=self.app_code('import cdsapp'),
                                  archive=bad)
        self.assertEqual(info['rejected'], 1)
        self.assertGreater(info['served'], 1)

    def shared_string_of(self, module, text):
        h = cdsformat.read_header(self.good)
        entry = next(e for e in cdsformat.read_index(self.good)
                     if e['name'] == module)
        for off, kind in cdsformat.fixups(self.good, entry):
            if kind == 'intern':
                target = int.from_bytes(self.good[off:off + 8], 'little')
                target -= h['preferred_base']
                start = target + cdsformat.ASCII_HEADER
                if self.good[start:start + len(text) + 1] == text + b'\0':
                    return target
        self.fail(f'{text} not interned by {module}')

    def test_corrupt_relocations(self):
        # checked when the module is relocated (forced here: a build with
        # --enable-cds-fixed-address may need no relocation at all)
        h = cdsformat.read_header(self.good)
        entry = next(e for e in cdsformat.read_index(self.good)
                     if e['name'] == 'cdsapp.shapes')
        data = bytearray(self.good)
        data[h['reloc_offset'] + 8 * entry['reloc_start'] + 1] ^= 0x10
        bad, stderr = self.run_damaged(data, '-X', 'cds_relocate')
        self.assertIn('module cdsapp.shapes: relocations checksum mismatch',
                      stderr)

    def test_corrupt_start_up_strings(self):
        h = cdsformat.read_header(self.good)
        self.assertGreater(h['seed_size'], 0)
        data = bytearray(self.good)
        data[h['str_offset'] + cdsformat.ASCII_HEADER] ^= 0x01
        bad, stderr = self.run_damaged(data)
        self.assertIn('start-up strings checksum mismatch', stderr)

    def test_corrupt_shared_string(self):
        # the characters of an identifier the module shares with others:
        # covered by the checksum of every module that interns it
        target = self.shared_string_of('cdsapp.shapes', b'make_adder')
        data = bytearray(self.good)
        data[target + cdsformat.ASCII_HEADER] ^= 0x01
        bad, stderr = self.run_damaged(data)
        self.assertIn('module cdsapp.shapes: checksum mismatch', stderr)
        # a length running past the string region: rejected before use
        data = bytearray(self.good)
        data[target + 16:target + 24] = (2 ** 40).to_bytes(8, 'little')
        bad, stderr = self.run_damaged(data)
        self.assertIn('module cdsapp.shapes: bad shared string', stderr)

    def test_unreadable(self):
        # root reads any file: as root, the interpreter runs as "nobody"
        user = unprivileged()
        shutil.copy(self.archive, self.bad)
        os.chmod(self.bad, 0)
        for path in (self.tmp, self.scratch):
            os.chmod(path, 0o755)
        self.check_unusable(None, 'cannot open', **user)
        # the same run can use a readable archive
        os.chmod(self.bad, 0o644)
        r, info = self.share_info(code=self.app_code('import cdsapp'),
                                  archive=self.bad, **user)
        self.assertTrue(info['active'])
        self.assertGreater(info['served'], 0)

    def test_other_optimization_level(self):
        r = self.share('-O', '-X', 'cds_verbose', '-c', 'pass')
        self.assertIn('optimization level', r.stderr)


class RuntimeTests(AppTestCase):
    ARCHIVE_PER_CLASS = True

    def test_hash_seeds(self):
        for seed in ('0', '1', '12345', 'random'):
            with self.subTest(seed=seed):
                env = clean_env(PYTHONHASHSEED=seed)
                r = self.share(self.main, env=env)
                self.assertEqual(r.stdout, self.expected)

    def test_forced_relocation(self):
        r = self.share('-X', 'cds_relocate', self.main)
        self.assertEqual(r.stdout, self.expected)
        r, info = self.share_info('-X', 'cds_relocate',
                                  code=self.app_code('import cdsapp.shapes'))
        self.assertFalse(info['mapped_at_preferred_address'])
        self.assertGreater(info['served'], 0)
        self.assertEqual(info['rejected'], 0)

    def test_start_up_strings_come_from_the_archive(self):
        # builtins' names the archive uses are interned from it before the
        # runtime interns its own: the builtins dict holds the archived key
        # (in place: copy mode, the PIE default, copies what it uses)
        code = ('import _cds, builtins\n'
                'key = [k for k in vars(builtins) if k == "ValueError"][0]\n'
                'print(_cds.is_archived(key))')
        self.assertEqual(self.python('-c', code).stdout.strip(), 'False')
        self.assertEqual(self.share('-X', 'cds_in_place', '-c', code)
                         .stdout.strip(), 'True')

    def test_identifiers_are_interned(self):
        code = self.app_code('''
            from cdsapp import shapes
            names = shapes.Point.norm.__code__.co_names
            for n in names:
                assert sys.intern(n) is n, n
            assert sys.intern("make_" + "adder") is shapes.make_adder.__code__.co_name
            p = shapes.Point(1, 2)
            assert list(vars(p)) == ["x", "y"]
        ''')
        self.share_info(code=code)

    def test_module_and_class_bodies_are_copies(self):
        # they run once, at import: served as heap copies so that the
        # archived bytecode stays unwritten; functions' code is archived,
        # and code watchers hear of as many code objects as without archive
        code = self.app_code('''
            import sys, gc, _cds, _testcapi
            watcher = _testcapi.add_code_watcher(0)
            from cdsapp import shapes
            created = _testcapi.get_code_watcher_num_created_events(watcher)
            _testcapi.clear_code_watcher(watcher)
            mod = shapes.__spec__.loader.get_code("cdsapp.shapes")
            bodies = [c for c in mod.co_consts
                      if hasattr(c, "co_code") and c.co_name in ("Point", "Shape")]
            assert len(bodies) == 2, bodies
            methods = [c for b in bodies for c in b.co_consts if hasattr(c, "co_code")]
            print(created, len(methods),
                  [_cds.is_archived(c) for c in [mod] + bodies],
                  sorted({_cds.is_archived(c) for c in methods}),
                  shapes.Square().describe(), shapes.Point(3, 4).norm())
        ''')
        off = self.python('-c', code).stdout
        r = self.share('-c', code)
        self.assertEqual(r.stdout.replace('True', 'False'), off)
        self.assertIn('[False, False, False] [True]', r.stdout)

    def test_run_once_code_released_and_copied_again(self):
        # copy mode gives the memory of a module's top-level code back once
        # it has been copied (release builds); a reload or a get_code()
        # copies it again from the archive, and runs the same
        code = self.app_code('''
            import importlib, _cds
            from cdsapp import shapes, consts
            def use(m):
                return (m.Square().describe(), repr(m.Square),
                        m.Point(3, 4).norm(), m.make_adder(2)(3))
            first = use(shapes)
            before = _cds.info()
            shapes = importlib.reload(shapes)
            after = _cds.info()
            ns = {"__name__": "copy"}
            exec(shapes.__spec__.loader.get_code("cdsapp.shapes"), ns)
            print(first, use(shapes), use(type("m", (), ns)),
                  consts.member("beta"))
            # the reload: served again, and released again
            print(after["served"] - before["served"],
                  after["released"] - before["released"])
        ''')
        off = self.python('-c', code).stdout.splitlines()[0]
        released = 0 if hasattr(sys, 'gettotalrefcount') else 1
        r, info = self.share_info(code=code)
        self.assertEqual(r.stdout.splitlines()[:2], [off, f'1 {released}'])
        r, info = self.share_info('-X', 'cds_in_place', code=code)
        self.assertEqual(r.stdout.splitlines()[:2], [off, '1 0'])
        self.assertEqual(info['released'], 0)

    def test_tracing_monitoring_and_specialization(self):
        code = self.app_code('''
            import sys, weakref, gc
            from cdsapp import shapes, consts
            events = []
            def tracer(frame, event, arg):
                if frame.f_code.co_filename.endswith("shapes.py"):
                    events.append((event, frame.f_lineno))
                return tracer
            sys.settrace(tracer)
            shapes.make_adder(1)(2)
            sys.settrace(None)
            print(events)
            mon = sys.monitoring
            mon.use_tool_id(3, "t")
            lines = []
            mon.register_callback(3, mon.events.LINE,
                                  lambda code, line: lines.append(line))
            mon.set_local_events(3, shapes.Point.norm.__code__, mon.events.LINE)
            print(shapes.Point(3, 4).norm(), lines)
            mon.set_local_events(3, shapes.Point.norm.__code__, 0)
            mon.free_tool_id(3)
            # warm up the specializing interpreter on archived code
            total = 0
            for i in range(20000):
                total += shapes.make_adder(i)(1) + shapes.Point(i, 0).x
                consts.member("beta")
            print(total)
            r = weakref.ref(shapes.fail.__code__)
            print(r() is shapes.fail.__code__)
            gc.collect()
            print(gc.collect() >= 0)
        ''')
        off = self.python('-c', code)
        shared = self.share('-c', code)
        self.assertEqual(shared.stdout, off.stdout)
        dev = self.share('-X', 'dev', '-c', code)
        self.assertEqual(dev.stdout, off.stdout)

    def test_loader_with_path_like(self):
        # whatever a loader made with a path-like object does, it does the
        # same with the archive on
        code = textwrap.dedent('''
            import pathlib, importlib.machinery, json
            p = pathlib.Path(json.__file__)
            loader = importlib.machinery.SourceFileLoader("json", p)
            try:
                print(loader.get_code("json").co_filename)
            except Exception as exc:
                print(type(exc).__name__)
        ''')
        off = self.python('-c', code)
        shared = self.share('-c', code)
        self.assertEqual(shared.stdout, off.stdout)

    def test_subinterpreters_use_normal_imports(self):
        # Archived objects belong to the main interpreter: a subinterpreter
        # (isolated or legacy) imports the archived modules the normal way
        # and gets what a process without the archive gets; the main
        # interpreter's modules still come from the archive.
        sub = self.app_code('''
            import json, _cds
            import cdsapp
            from cdsapp import consts, shapes
            funcs = (shapes.make_adder, shapes.Point.norm, consts.member,
                     shapes.fail, json.dumps)
            modules = [(m.__name__, m.__file__, m.__cached__,
                        type(m.__loader__).__name__, m.__spec__.origin)
                       for m in (cdsapp, consts, shapes, json)]
            code = [(f.__code__.co_code, f.__code__.co_names,
                     f.__code__.co_linetable) for f in funcs]
            print("SUB", [_cds.is_archived(f.__code__) for f in funcs],
                  modules, code, consts.BIG, consts.UCS4, consts.member("beta"),
                  shapes.Point(3, 4).norm(), shapes.Square().describe(),
                  flush=True)
        ''')
        code = self.app_code('''
            import _cds, _interpreters, json
            served = []
            for config in ("isolated", "legacy"):
                served.append(_cds.info()["served"])
                interp = _interpreters.create(config)
                error = _interpreters.run_string(interp, SUB_CODE)
                _interpreters.destroy(interp)
                assert error is None, error
            served.append(_cds.info()["served"])
            from cdsapp import shapes
            print(json.dumps({
                "served_by_subinterpreters": [b - a for a, b
                                              in zip(served, served[1:])],
                "served_after": _cds.info()["served"] - served[-1],
                "archived": _cds.is_archived(shapes.make_adder.__code__)}))
        ''').replace('SUB_CODE', repr(sub))
        off = self.python('-c', code).stdout.splitlines()
        shared = self.share('-c', code).stdout.splitlines()
        # the subinterpreters: the same modules, code and results as
        # without the archive, and no archived code
        self.assertEqual(len(shared), 3)
        self.assertEqual(shared[:2], off[:2])
        for line in shared[:2]:
            self.assertTrue(line.startswith('SUB [False, False, False, False, '
                                            'False] '), line)
        # nothing served while they ran; then cdsapp and its imports are
        # served to the main interpreter
        self.assertEqual(json.loads(off[2]),
                         {'served_by_subinterpreters': [0, 0],
                          'served_after': 0, 'archived': False})
        main = json.loads(shared[2])
        self.assertEqual(main['served_by_subinterpreters'], [0, 0])
        self.assertGreaterEqual(main['served_after'], 3)
        self.assertTrue(main['archived'])

    def test_concurrent_processes_while_redumped(self):
        # (a copy of the class's archive, redumped in place)
        archive = os.path.join(self.scratch, 'redumped.cds')
        shutil.copy(self.archive, archive)
        cmd = [sys.executable, *NO_BASE, *share_args(archive), self.main]
        procs = []
        for round in range(3):
            procs += [subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True,
                                       env=clean_env(), cwd=self.tmp)
                      for _ in range(3)]
            self.dump(archive=archive)
        for p in procs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, err)
            self.assertEqual(out, self.expected)


if __name__ == '__main__':
    unittest.main()
