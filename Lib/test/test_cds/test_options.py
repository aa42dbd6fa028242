"""Parsing of the -X cds* options and the PYTHONCDS* environment."""

import glob
import json
import os
import re
import sysconfig
import tempfile
import unittest

from test.support import os_helper
from test.test_cds.util import CDS_ENV_VARS, clean_env, run_python

INFO = 'import _cds; i = _cds.info(); print(i["mode"], i["list"], i["archive"], i["verbose"])'


def info(*args, env=None, cwd=None):
    if cwd is None:
        # trace mode writes its list (a relative path: in the working
        # directory) at exit
        with tempfile.TemporaryDirectory() as tmp:
            return info(*args, env=env, cwd=tmp)
    r = run_python(*args, '-c', INFO, env=env, cwd=cwd)
    if r.returncode != 0:
        raise AssertionError(r.stderr)
    mode, lst, archive, verbose = r.stdout.split()
    return mode, lst, archive, int(verbose)


class OptionTests(unittest.TestCase):

    def test_default_is_share(self):
        # share mode, with the installation's default archive (test_default)
        self.assertEqual(info(), ('share', 'None', 'None', 0))

    def test_xoption_modes(self):
        self.assertEqual(info('-X', 'cds=off')[0], 'off')
        mode, lst, archive, _ = info('-X', 'cds=trace', '-X', 'cds_list=x.lst')
        self.assertEqual(mode, 'trace')
        self.assertEqual(os.path.basename(lst), 'x.lst')

    def test_env_modes(self):
        self.assertEqual(info(env=clean_env(PYTHONCDS='trace',
                                            PYTHONCDSLIST='x.lst'))[0],
                         'trace')
        for value in ('TRACE', 'trace', 'TrAcE'):
            with self.subTest(value=value):
                self.assertEqual(info(env=clean_env(PYCDSMODE=value,
                                                    PYCDSLIST='x.lst'))[0],
                                 'trace')

    def test_pythoncds_in_any_case(self):
        # as people type environment values; the -X option stays exact
        for value in ('SHARE', 'Share', 'OFF', 'Trace'):
            with self.subTest(value=value):
                self.assertEqual(info(env=clean_env(PYTHONCDS=value,
                                                    PYTHONCDSLIST='x.lst'))[0],
                                 value.lower())
        code = ('import _cds; print([a["reason"] for a in _cds.info()["archives"]'
                ' if a["active"] or a["role"] != "application"])')
        r = run_python('-c', code, default_archive=True,
                       env=clean_env(PYTHONCDSBASE='NONE'))
        self.assertEqual((r.returncode, r.stdout),
                         (0, "['-X cds_base=none']\n"), r.stderr)

    def test_xoption_wins_over_env(self):
        env = clean_env(PYTHONCDS='trace', PYCDSMODE='trace',
                        PYTHONCDSLIST='/tmp/env.lst',
                        PYTHONCDSVERBOSE='3')
        mode, lst, _, verbose = info('-X', 'cds=off', '-X', 'cds_list=/tmp/x.lst',
                                     '-X', 'cds_verbose=1', env=env)
        self.assertEqual((mode, lst, verbose), ('off', '/tmp/x.lst', 1))

    def test_pythoncds_wins_over_pycdsmode(self):
        env = clean_env(PYTHONCDS='off', PYCDSMODE='TRACE',
                        PYTHONCDSLIST='/tmp/a.lst', PYCDSLIST='/tmp/b.lst',
                        PYTHONCDSVERBOSE='2', PYCDSVERBOSE='5')
        self.assertEqual(info(env=env), ('off', '/tmp/a.lst', 'None', 2))

    def test_legacy_names(self):
        env = clean_env(PYCDSMODE='trace', PYCDSLIST='b.lst',
                        PYCDSVERBOSE='4')
        mode, lst, _, verbose = info(env=env)
        self.assertEqual((mode, os.path.basename(lst), verbose),
                         ('trace', 'b.lst', 4))

    def test_ignore_environment(self):
        env = clean_env(PYTHONCDS='trace', PYCDSMODE='trace',
                        PYTHONCDSLIST='/tmp/a.lst', PYTHONCDSVERBOSE='2')
        for flag in ('-E', '-I'):
            with self.subTest(flag=flag):
                self.assertEqual(info(flag, env=env),
                                 ('share', 'None', 'None', 0))

    def test_verbose_forms(self):
        self.assertEqual(info('-X', 'cds_verbose')[3], 1)
        self.assertEqual(info('-X', 'cds_verbose=3')[3], 3)
        self.assertEqual(info(env=clean_env(PYTHONCDSVERBOSE='2'))[3], 2)

    def check_refused(self, args, env, expected, cwd):
        r = run_python(*args, '-c', 'print("ran")', env=env, cwd=cwd)
        self.assertEqual(r.returncode, 1, r)
        self.assertNotIn('ran', r.stdout)
        self.assertIn(expected, r.stderr)

    def test_trace_and_dump_need_explicit_paths(self):
        # no list or archive is taken from the working directory: one
        # there may be anyone's (a shared /tmp)
        trace = ('-X cds=trace needs a module list '
                 '(-X cds_list=PATH or PYTHONCDSLIST)')
        dump_list = ('-X cds=dump needs a module list '
                     '(-X cds_list=PATH or PYTHONCDSLIST)')
        dump_archive = ('-X cds=dump needs an archive path '
                        '(-X cds_archive=PATH or PYTHONCDSARCHIVE)')
        cases = [
            (('-X', 'cds=trace'), None, trace),
            ((), clean_env(PYTHONCDS='trace'), trace),
            ((), clean_env(PYCDSMODE='TRACE'), trace),
            (('-X', 'cds=trace', '-X', 'cds_archive=a.cds'), None, trace),
            (('-X', 'cds=dump'), None, dump_list),
            (('-X', 'cds=dump', '-X', 'cds_archive=a.cds'), None, dump_list),
            ((), clean_env(PYTHONCDS='dump', PYTHONCDSARCHIVE='a.cds'),
             dump_list),
            (('-X', 'cds=dump', '-X', 'cds_list=a.lst'), None, dump_archive),
            ((), clean_env(PYTHONCDS='dump', PYTHONCDSLIST='a.lst'),
             dump_archive),
        ]
        with tempfile.TemporaryDirectory() as tmp:
            for args, env, expected in cases:
                with self.subTest(args=args, env=env and {
                        k: v for k, v in env.items() if 'CDS' in k}):
                    self.check_refused(args, env, expected, tmp)
            # nothing was written there, under the old default names or
            # any other
            self.assertEqual(os.listdir(tmp), [])
            # a relative path given is used, made absolute at start-up
            cwd = os.path.realpath(tmp)
            mode, lst, _, _ = info('-X', 'cds=trace', '-X', 'cds_list=rel.lst',
                                   cwd=cwd)
            self.assertEqual(lst, os.path.join(cwd, 'rel.lst'))
            self.assertEqual(sorted(os.listdir(tmp)),
                             ['rel.lst', 'rel.lst.lock'])

    def test_share_without_archive_maps_nothing(self):
        code = ('import _cds, json, sys; i = _cds.info(); '
                'print(json.dumps([i["mode"], i["archive"], i["active"], '
                'i["served"]]))')
        for args, env in [(('-X', 'cds=share'), None),
                          (('-X', 'cds'), None),
                          ((), clean_env(PYTHONCDS='share')),
                          ((), clean_env(PYCDSMODE='SHARE'))]:
            with self.subTest(args=args, env=env and {
                    k: v for k, v in env.items() if 'CDS' in k}), \
                    tempfile.TemporaryDirectory() as tmp:
                r = run_python(*args, '-c', code, env=env, cwd=tmp)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(json.loads(r.stdout),
                                 ['share', None, False, 0])
                self.assertEqual(r.stderr, '')     # silently
                r = run_python(*args, '-X', 'cds_verbose', '-c', 'pass',
                               env=env, cwd=tmp)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn('cds: share: no archive given', r.stderr)

    def test_relative_paths_are_made_absolute(self):
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.path.realpath(tmp)
            _, lst, _, _ = info('-X', 'cds_list=sub/app.lst', cwd=cwd)
            self.assertEqual(lst, os.path.join(cwd, 'sub/app.lst'))

    def check_invalid(self, args, env, expected):
        r = run_python(*args, '-c', 'print("ran")', env=env)
        self.assertEqual(r.returncode, 1, r)
        self.assertNotIn('ran', r.stdout)
        self.assertIn(expected, r.stderr)

    def test_invalid_values(self):
        cases = [
            (('-X', 'cds=on'), None, 'bad value for option -X cds'),
            (('-X', 'cds=TRACE'), None, 'bad value for option -X cds'),
            (('-X', 'cds_verbose=x'), None, 'bad value for option -X cds_verbose'),
            (('-X', 'cds_verbose=-1'), None, 'bad value for option -X cds_verbose'),
            (('-X', 'cds_list='), None, 'option -X cds_list requires a path'),
            (('-X', 'cds_archive='), None, 'option -X cds_archive requires a path'),
            ((), clean_env(PYTHONCDS='bogus'), 'bad value for PYTHONCDS'),
            ((), clean_env(PYCDSMODE='bogus'), 'bad value for PYCDSMODE'),
            ((), clean_env(PYTHONCDSVERBOSE='many'), 'bad value for PYTHONCDSVERBOSE'),
            ((), clean_env(PYCDSVERBOSE='many'), 'bad value for PYCDSVERBOSE'),
        ]
        for args, env, expected in cases:
            with self.subTest(args=args, env=env and {k: v for k, v in env.items() if 'CDS' in k}):
                self.check_invalid(args, env, expected)

    def test_check_source_values(self):
        for args, env in [(('-X', 'cds_check_source'), None),
                          (('-X', 'cds_check_source=0'), None),
                          (('-X', 'cds_check_source=1'), None),
                          ((), clean_env(PYTHONCDSCHECKSOURCE='1'))]:
            with self.subTest(args=args, env=env and 'PYTHONCDSCHECKSOURCE'):
                r = run_python(*args, '-c', 'print("ran")', env=env)
                self.assertEqual((r.returncode, r.stdout), (0, 'ran\n'),
                                 r.stderr)
        for value in ('2', 'yes', '-1'):
            with self.subTest(value=value):
                self.check_invalid(('-X', f'cds_check_source={value}'), None,
                                   'bad value for option -X cds_check_source')

    def test_invalid_mode_names_the_valid_ones(self):
        lower = ('"off"', '"trace"', '"dump"', '"share"')
        cases = [(('-X', 'cds=nope'), None, lower),
                 ((), clean_env(PYTHONCDS='nope'), lower),
                 ((), clean_env(PYCDSMODE='nope'),
                  ('TRACE', 'DUMP', 'SHARE', 'OFF'))]
        for args, env, values in cases:
            r = run_python(*args, '-c', 'pass', env=env)
            for value in values:
                with self.subTest(args=args, value=value):
                    self.assertEqual(r.returncode, 1)
                    self.assertIn(value, r.stderr)

    def test_invalid_env_ignored_with_E(self):
        r = run_python('-E', '-c', 'print("ran")',
                       env=clean_env(PYTHONCDS='bogus'))
        self.assertEqual((r.returncode, r.stdout.strip()), (0, 'ran'))

    def test_help_texts(self):
        r = run_python('--help-xoptions')
        for opt in ('-X cds=', '-X cds_list=PATH', '-X cds_archive=PATH',
                    '-X cds_verbose'):
            self.assertIn(opt, r.stdout)
        r = run_python('--help-env')
        for var in ('PYTHONCDS ', 'PYTHONCDSLIST', 'PYTHONCDSARCHIVE',
                    'PYTHONCDSVERBOSE', 'PYCDSMODE', 'PYTHONCDSSTATS',
                    'PYTHONCDSBASE', 'PYTHONCDSSTRICT'):
            self.assertIn(var, r.stdout)

    def test_help_texts_check_source_and_no_default_paths(self):
        r = run_python('--help-xoptions')
        self.assertIn('-X cds_check_source', r.stdout)
        r2 = run_python('--help-env')
        self.assertIn('PYTHONCDSCHECKSOURCE', r2.stdout)
        for out in (r.stdout, r2.stdout):
            self.assertNotIn('pycds.lst', out)
            self.assertNotIn('pycds.cds', out)


class EnvironmentListTests(unittest.TestCase):
    """util.CDS_ENV_VARS, which the tests and tools remove from the
    environment of their child processes, names every variable the
    interpreter reads."""

    def test_clean_env_removes_them(self):
        with tempfile.TemporaryDirectory() as tmp, \
                os_helper.EnvironmentVarGuard() as environ:
            for name in CDS_ENV_VARS:
                environ[name] = 'bogus'
            environ['PYTHONCDSSTATS'] = os.path.join(tmp, 'stats')
            # the interpreter reads them: start-up stops on the bad values
            r = run_python('-c', 'pass', env=dict(os.environ), cwd=tmp)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(info(env=clean_env(), cwd=tmp),
                             ('share', 'None', 'None', 0))
            self.assertEqual(os.listdir(tmp), [])

    def test_help_env_names_are_listed(self):
        r = run_python('--help-env')
        named = set(re.findall(r'\b(PY(?:THON)?CDS[A-Z]*)\b', r.stdout))
        self.assertTrue(named)
        self.assertLessEqual(named, set(CDS_ENV_VARS))

    @unittest.skipUnless(sysconfig.is_python_build(), 'needs the C sources')
    def test_sources_read_no_other_variable(self):
        # every PYTHONCDS*/PYCDS* name the C sources spell out
        srcdir = sysconfig.get_config_var('srcdir')
        names = set()
        for path in glob.glob(os.path.join(srcdir, 'Python', '**', '*.c'),
                              recursive=True):
            with open(path, encoding='utf-8', errors='replace') as f:
                names.update(re.findall(r'"(PY(?:THON)?CDS[A-Z]*)"', f.read()))
        self.assertIn('PYTHONCDSSTATS', names)
        # (cds_auto.c clears the whole family from its dump's environment)
        names.discard('PYCDS')
        self.assertEqual(names, set(CDS_ENV_VARS))


if __name__ == '__main__':
    unittest.main()
