"""The C fast path of the path-based finder (_imp._cds_find_spec).

Each scenario runs the same program with the archive off and in share
mode: the modules it imports, their specs and attributes and the order of
sys.modules must be the same, and the fast path must have been taken where
it can prove what the normal search finds, and not where it cannot.
"""

import os
import shutil
import sys
import textwrap
import unittest
import zipfile

from test.test_cds.util import (make_archive, run_checked, run_python,
                                share_args, temp_dir, trace_args, write_files)

# Printed by every scenario: what each module is and where it came from.
DESCRIBE = '''
import sys, _cds
def describe(name):
    m = sys.modules[name]
    s = m.__spec__
    loader = s.loader if isinstance(s.loader, type) else type(s.loader)
    print(name, s.name, loader.__name__, s.origin, s.cached,
          s.submodule_search_locations, s.has_location, s.parent,
          getattr(m, '__file__', None), getattr(m, '__cached__', None),
          m.__package__, getattr(m, '__path__', None),
          getattr(m, 'MARK', None))
'''
REPORT = '''
for name in WATCH:
    if name in sys.modules:
        describe(name)
print([n for n in sys.modules if n in WATCH])
print("SPECS", _cds.info()["specs_found"])
'''
WATCH = ['fmod', 'fpkg', 'fpkg.sub', 'fpkg.other', 'early_only', '__hello__']


class FinderTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = temp_dir(cls.addClassCleanup)
        cls.lib = os.path.join(cls.tmp, 'lib')
        write_files(cls.lib, {
            'fmod.py': 'MARK = "lib"\n',
            'fpkg/__init__.py': 'MARK = "libpkg"\n',
            'fpkg/sub.py': 'MARK = "libsub"\n',
            'fpkg/other.py': 'from . import sub\nMARK = "libother"\n',
        })
        cls.archive = os.path.join(cls.tmp, 'f.cds')
        lst = os.path.join(cls.tmp, 'f.lst')
        # __hello__ as a source module, traced with frozen modules off
        run_checked(*trace_args(lst), '-X', 'frozen_modules=off',
                    '-c', 'import __hello__')
        make_archive(lst, cls.archive, [
            '-c', f'import sys; sys.path.insert(0, {cls.lib!r})\n'
                  'import fmod, fpkg.sub, fpkg.other\n'])

    def setUp(self):
        # what a scenario finds in EARLY at its start; each run gets a
        # fresh copy at the same path
        self.template = temp_dir(self.addCleanup)
        self.early = os.path.join(self.tmp, 'early')

    def run_both(self, body, *args, cwd=None):
        """Run the scenario off and in share mode; return the output (the
        same in both) and the modules whose spec the fast path found."""
        code = (DESCRIBE + f'WATCH = {WATCH!r}\n'
                + f'LIB, EARLY = {self.lib!r}, {self.early!r}\n'
                + textwrap.dedent(body) + REPORT)
        share = [*share_args(self.archive), '-X', 'cds_verbose=2']
        outputs = []
        for mode in ([], share):
            shutil.rmtree(self.early, ignore_errors=True)
            shutil.copytree(self.template, self.early)
            r = run_python(*args, *mode, '-c', code,
                           cwd=self.early if cwd == 'early' else cwd)
            self.assertEqual(r.returncode, 0, r.stderr)
            outputs.append(r)
        off, share = outputs
        off_lines, share_lines = off.stdout.splitlines(), share.stdout.splitlines()
        self.assertEqual(off_lines[-1], 'SPECS 0')
        self.assertEqual(share_lines[:-1], off_lines[:-1])
        found = [l.split(': ', 2)[2] for l in share.stderr.splitlines()
                 if l.startswith('cds: spec found: ')]
        self.assertEqual(len(found), int(share_lines[-1].split()[1]))
        # start-up modules may be found too: only the scenario's count
        return share_lines[:-1], [name for name in found if name in WATCH]

    def marks(self, lines):
        """{module: MARK} from the describe() lines"""
        return {l.split()[0]: l.split()[-1] for l in lines
                if not l.startswith('[')}

    def write(self, rel, text):
        write_files(self.template, {rel: text})

    def test_found_in_c(self):
        lines, found = self.run_both('''
            import importlib.util
            sys.path[:0] = [EARLY, LIB]
            print(importlib.util.find_spec('fmod').origin)
            import fmod, fpkg.other
        ''')
        self.assertEqual(lines[0], os.path.join(self.lib, 'fmod.py'))
        self.assertEqual(self.marks(lines[1:]),
                         {'fmod': 'lib', 'fpkg': 'libpkg', 'fpkg.sub': 'libsub',
                          'fpkg.other': 'libother'})
        self.assertIn("fpkg.sub fpkg.sub SourceFileLoader "
                      + os.path.join(self.lib, 'fpkg', 'sub.py'), lines[3])
        # The first search of a directory has no cached finder yet (the
        # path hooks make it) and is left to Python: find_spec('fmod'),
        # which caches the finders of EARLY and LIB, and fpkg.other, the
        # first module searched for in LIB/fpkg.
        self.assertEqual(found, ['fmod', 'fpkg', 'fpkg.sub'])

    def test_shadowed_after_the_directory_was_cached(self):
        self.write('early_only.py', 'MARK = "early"\n')
        lines, found = self.run_both('''
            import time
            sys.path[:0] = [EARLY, LIB]
            import early_only, fpkg  # both directories are cached
            time.sleep(0.05)         # a new mtime for EARLY
            with open(EARLY + '/fmod.py', 'w') as f:
                f.write('MARK = "early"\\n')
            import fmod
        ''')
        self.assertIn(os.path.join(self.early, 'fmod.py'), lines[0])
        self.assertTrue(lines[0].endswith('early'))
        self.assertEqual(found, [])

    def test_stale_directory_cache_is_kept_as_python_keeps_it(self):
        # A finder refreshes its cache only when the directory's mtime
        # changes, or after importlib.invalidate_caches(); the fast path
        # makes the same decisions, even where the cache is out of date.
        self.write('early_only.py', 'MARK = "early"\n')
        os.mkdir(os.path.join(self.template, '__pycache__'))
        lines, found = self.run_both('''
            import importlib, os
            sys.dont_write_bytecode = True
            sys.path[:0] = [EARLY, LIB]
            import early_only, fpkg  # both directories are cached
            st = os.stat(EARLY)
            with open(EARLY + '/fmod.py', 'w') as f:
                f.write('MARK = "early"\\n')
            os.utime(EARLY, ns=(st.st_atime_ns, st.st_mtime_ns))
            import fmod
            print(fmod.__file__)
            del sys.modules['fmod']
            importlib.invalidate_caches()
            import fmod
            print(fmod.__file__)
        ''')
        self.assertEqual(lines[0], os.path.join(self.lib, 'fmod.py'))
        self.assertEqual(lines[1], os.path.join(self.early, 'fmod.py'))
        self.assertEqual(found, ['fmod'])

    def test_package_earlier_on_the_path(self):
        self.write('fpkg/__init__.py', 'MARK = "earlypkg"\n')
        self.write('fpkg/sub.py', 'MARK = "earlysub"\n')
        lines, found = self.run_both('''
            sys.path[:0] = [EARLY, LIB]
            import fmod, fpkg.sub
        ''')
        self.assertEqual(self.marks(lines),
                         {'fmod': 'lib', 'fpkg': 'earlypkg',
                          'fpkg.sub': 'earlysub'})
        self.assertEqual(found, [])

    def test_namespace_portion_earlier_on_the_path(self):
        os.makedirs(os.path.join(self.template, 'fmod'))
        self.write('early_only.py', '')
        lines, found = self.run_both('''
            sys.path[:0] = [EARLY, LIB]
            import early_only, fmod, fpkg
        ''')
        self.assertEqual(self.marks(lines), {'fmod': 'lib', 'fpkg': 'libpkg',
                                             'early_only': 'None'})
        self.assertEqual(found, ['fpkg'])

    def test_other_loader_first_in_the_same_directory(self):
        # an extension module file wins over the source file next to it
        self.write('fmod.py', 'MARK = "early"\n')
        with open(os.path.join(self.template, 'fmod.abi3.so'), 'wb') as f:
            f.write(b'not an ELF file')
        lines, found = self.run_both('''
            sys.path[:0] = [EARLY, LIB]
            import fpkg
            try:
                import fmod
            except ImportError as e:
                print(type(e).__name__, e.name, e.path)
        ''')
        self.assertEqual(lines[0], 'ImportError fmod '
                         + os.path.join(self.early, 'fmod.abi3.so'))
        self.assertEqual(found, [])

    def test_zip_earlier_on_the_path(self):
        zpath = os.path.join(self.template, 'mods.zip')
        with zipfile.ZipFile(zpath, 'w') as z:
            z.writestr('fmod.py', 'MARK = "zip"\n')
        lines, found = self.run_both('''
            sys.path[:0] = [EARLY + '/mods.zip', LIB]
            import fpkg, fmod, fpkg.sub
        ''')
        self.assertIn('zipimporter', lines[0])
        self.assertTrue(lines[0].endswith('zip'))
        self.assertEqual(found, [])

    def test_meta_path_finder_first(self):
        lines, found = self.run_both('''
            import importlib.abc, importlib.util
            class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
                def find_spec(self, name, path, target=None):
                    if name == 'fmod':
                        return importlib.util.spec_from_loader(name, self)
                def create_module(self, spec):
                    return None
                def exec_module(self, module):
                    module.MARK = 'meta'
            sys.path[:0] = [EARLY, LIB]
            import fpkg
            sys.meta_path.insert(0, Finder())
            import fmod, fpkg.sub
        ''')
        self.assertTrue(lines[0].startswith('fmod fmod Finder'))
        self.assertTrue(lines[0].endswith('meta'))
        self.assertEqual(found, [])

    def test_finder_method_replaced(self):
        # a wrapper installed on the class (as a mock would be) sees every
        # search, as in a normal import
        lines, found = self.run_both('''
            import importlib.machinery as m
            seen = []
            orig = m.FileFinder.find_spec
            def find_spec(self, fullname, target=None):
                seen.append(fullname)
                return orig(self, fullname, target)
            sys.path[:0] = [EARLY, LIB]
            import fpkg
            m.FileFinder.find_spec = find_spec
            import fmod, fpkg.sub
            print(sorted(n for n in seen if n in WATCH))
        ''')
        self.assertEqual(lines[0], "['fmod', 'fmod', 'fpkg.sub']")
        self.assertEqual(found, [])

    def test_path_hook_for_a_new_entry(self):
        lines, found = self.run_both('''
            import importlib.machinery as m
            class MyLoader(m.SourceFileLoader):
                pass
            hook = m.FileFinder.path_hook((MyLoader, ['.py']))
            sys.path_hooks.insert(0, hook)
            sys.path_importer_cache.clear()
            sys.path[:0] = [EARLY, LIB]
            import fpkg, fmod, fpkg.sub
        ''')
        self.assertIn('MyLoader', lines[0])
        self.assertEqual(found, [])

    def test_current_directory_entry(self):
        self.write('fmod.py', 'MARK = "cwd"\n')
        lines, found = self.run_both('''
            sys.path[:0] = ['', LIB]
            import fpkg.sub, fmod, fpkg.other
        ''', cwd='early')
        self.assertEqual(self.marks(lines), {'fmod': 'cwd', 'fpkg': 'libpkg',
                                             'fpkg.sub': 'libsub',
                                             'fpkg.other': 'libother'})
        self.assertEqual(found, ['fpkg.other'])
        lines, found = self.run_both('''
            sys.path[:0] = ['', LIB]
            import fmod, fpkg
        ''', cwd=self.lib)
        self.assertEqual(self.marks(lines), {'fmod': 'lib', 'fpkg': 'libpkg'})
        self.assertIn('fpkg', found)

    def test_reload(self):
        lines, found = self.run_both('''
            import importlib
            sys.path[:0] = [EARLY, LIB]
            import fpkg, fmod
            with open(EARLY + '/fmod.py', 'w') as f:
                f.write('MARK = "early"\\n')
            importlib.invalidate_caches()
            importlib.reload(fmod)
        ''')
        self.assertTrue(lines[0].endswith('early'))
        self.assertEqual(found, ['fmod'])

    def test_frozen_module_wins(self):
        # The archive holds __hello__ as a source module (traced with
        # -X frozen_modules=off).  FrozenImporter finds it first unless
        # frozen modules are off.
        lines, found = self.run_both('import __hello__',
                                     '-X', 'frozen_modules=on')
        self.assertIn('__hello__ __hello__ FrozenImporter frozen', lines[0])
        self.assertNotIn('__hello__', found)
        lines, found = self.run_both('import __hello__',
                                     '-X', 'frozen_modules=off')
        self.assertIn('__hello__ __hello__ SourceFileLoader', lines[0])
        self.assertIn('__hello__', found)

    def test_cached_path_as_the_property_makes_it(self):
        # The fast path sets spec.cached itself (for fpkg and fpkg.other
        # here); describe() prints it and __cached__, which must be what the
        # property makes under -O, with a pycache prefix, and with
        # importlib's values changed at run time.
        tag = sys.implementation.cache_tag
        cases = [
            ('', [], f'fpkg/__pycache__/other.{tag}.pyc'),
            ('', ['-O'], f'fpkg/__pycache__/other.{tag}.opt-1.pyc'),
            ('', ['-X', 'pycache_prefix=' + self.tmp],
             f'{self.lib.lstrip("/")}/fpkg/other.{tag}.pyc'),
            ('sys.implementation.cache_tag = "other-7"', [],
             'fpkg/__pycache__/other.other-7.pyc'),
            ('sys.implementation.cache_tag = None', [], 'None'),
            ('import importlib._bootstrap_external as e\n'
             'e.BYTECODE_SUFFIXES.insert(0, ".pyx")\n'
             'e._PYCACHE = "cache"', [], f'fpkg/cache/other.{tag}.pyx'),
            ('import importlib._bootstrap_external as e\n'
             'e.cache_from_source = lambda path: path + "-c"', [],
             'fpkg/other.py-c'),
        ]
        for setup, args, other_cached in cases:
            with self.subTest(setup=setup, args=args):
                lines, found = self.run_both(
                    setup + '\nsys.path[:0] = [LIB]\n'
                    'import fmod, fpkg.sub, fpkg.other\n', *args)
                # fpkg.other: spec.cached, then __cached__
                fields = lines[3].split()
                self.assertTrue(fields[4].endswith(other_cached), fields[4])
                self.assertEqual(fields[9], fields[4])
                if '-O' not in args:
                    self.assertEqual(found, ['fpkg', 'fpkg.other'])

    def test_not_with_very_verbose(self):
        # -vv: the Python finders report every path they try
        code = ('import sys, _cds; sys.path.insert(0, %r)\n'
                'import fpkg, fmod; print(_cds.info()["specs_found"])'
                % self.lib)
        share = share_args(self.archive)
        r = run_python('-vv', *share, '-c', code)
        self.assertEqual(r.stdout, '0\n')
        self.assertIn('# trying ' + os.path.join(self.lib, 'fmod'), r.stderr)
        r = run_python('-v', *share, '-c', code)
        self.assertGreaterEqual(int(r.stdout), 1)


if __name__ == '__main__':
    unittest.main()
