"""The driver: set-up (the application, its list, archive and baseline),
the cases (a seeded mutation, then its runs), their outcomes, the report
and the command line."""

import argparse
from collections import Counter
import json
import os
import random
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import traceback

from test.test_cds.util import clean_env

from .app import APP
from .lists import mutate_list
from .model import LEVELS, Model, load_format, self_check
from .objects import mutate_objects
from .runner import (Step, child_limits, copy_tree, crash_kind, kill_group,
                     parse_info, read_text, rmtree, write_private)
from .tables import mutate_header, mutate_index, mutate_records, mutate_strtab

# Tools/pycds/fuzz/driver.py -> the source tree root
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

TARGETS = ('header', 'index', 'strtab', 'records', 'objects', 'list')
# how often each target is picked: the deep ones get more runs
TARGET_WEIGHTS = {'header': 2, 'index': 2, 'strtab': 1, 'records': 4,
                  'objects': 6, 'list': 2}
# -X options a share run may add (those the build accepts; see setup)
EXTRA_OPTIONS = ('cds_relocate', 'cds_verify', 'cds_protect',
                 'cds_check_source')

# Each returns (bytes, notes, expect, level).  expect: 'baseline' when the
# program must print its baseline output (the archive refused or
# unaffected), 'any' when the mutation may change what it runs (forged
# content); only a crash is a failure then.  level: the weakest check that
# covers the change (LEVELS; damage, with the checksums left, is always
# 'default': the checksums catch it).
ARCHIVE_MUTATORS = {
    'header': mutate_header,
    'index': mutate_index,
    'strtab': mutate_strtab,
    'records': mutate_records,
    'objects': mutate_objects,
}


class Fuzzer:

    def __init__(self, args):
        self.args = args
        self.python = os.path.abspath(args.python)
        self.fmt = load_format(args.format)
        self.stats = {}
        self.reasons = {}
        # what is saved and listed: crashes, and the others worth a look
        self.found = {'crash': [], 'unchecked': [], 'undetected': []}
        self.fuzzer_errors = {}
        self.processes = 0
        self.saved = Counter()
        self.running = []
        self.done = []
        self.changed = False

    # -- set-up --

    def env(self, hash_seed):
        return clean_env(PYTHONHASHSEED=str(hash_seed), PYTHONCDSBASE='none',
                         PYTHONDONTWRITEBYTECODE='1', PYTHONFAULTHANDLER=None,
                         PYTHONMALLOC=None)

    def run_now(self, *args, timeout=120, cwd=None, env=None):
        return subprocess.run([self.python, *args], cwd=cwd or self.app,
                              env=env or self.env(0),
                              capture_output=True, timeout=timeout)

    def setup(self):
        """The application, its list, archive and baseline output."""
        args = self.args
        base = args.workdir or tempfile.gettempdir()
        self.work = os.path.realpath(tempfile.mkdtemp(prefix='pyfuzz-',
                                                      dir=base))
        self.app = os.path.join(self.work, 'app')
        self.cases = os.path.join(self.work, 'cases')
        os.mkdir(self.cases)
        for rel, text in APP.items():
            path = os.path.join(self.app, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8') as f:
                f.write(textwrap.dedent(text).lstrip())
        self.main = os.path.join(self.app, 'main.py')
        st = os.stat(self.python)
        self.binary = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.lst = os.path.join(self.work, 'app.lst')
        self.archive = os.path.join(self.work, 'app.arc')
        off = self.run_now('-X', 'cds=off', self.main)
        if off.returncode != 0:
            raise SetupError('the application fails without the archive:\n'
                             + off.stderr.decode('utf-8', 'replace'))
        self.baseline = off.stdout.decode('utf-8', 'replace')
        r = self.run_now('-X', 'cds=trace', '-X', f'cds_list={self.lst}',
                         self.main)
        if r.returncode != 0 or not os.path.exists(self.lst):
            raise SetupError('trace failed:\n'
                             + r.stderr.decode('utf-8', 'replace'))
        r = self.run_now('-X', 'cds=dump', '-X', f'cds_list={self.lst}',
                         '-X', f'cds_archive={self.archive}')
        if r.returncode != 0 or not os.path.exists(self.archive):
            raise SetupError('this build cannot dump an archive:\n'
                             + r.stderr.decode('utf-8', 'replace'))
        with open(self.archive, 'rb') as f:
            data = f.read()
        with open(self.lst, 'rb') as f:
            self.list_bytes = f.read()
        try:
            self.model = Model(self.fmt, data, self.app)
            problems = self_check(self.fmt, self.model)
        except Exception as exc:
            raise SetupError('format.py cannot read the archive: '
                             f'{exc!r}\n{traceback.format_exc()}')
        if problems:
            raise SetupError('format.py does not describe this archive '
                             '(rebuild the interpreter, or pass --format '
                             'with the reader of its revision): '
                             + ', '.join(problems))
        for w in self.model.warnings:
            print(f'warning: {w}', file=sys.stderr)
        # the -X options this build has
        self.extras = []
        for opt in EXTRA_OPTIONS:
            r = self.run_now('-X', opt, '-c', 'pass')
            if r.returncode == 0:
                self.extras.append(opt)
        # the unmutated archive gives the baseline, with each option
        for opts in [[]] + [[o] for o in self.extras]:
            step = self.share_step(self.archive, opts, 1, 'sanity')
            r = self.run_now(*step.args[1:], env=self.env(0))
            out = r.stdout.decode('utf-8', 'replace')
            info = parse_info(r.stderr.decode('utf-8', 'replace'))
            if out != self.baseline or not info.get('served'):
                raise SetupError(
                    f'the unmutated archive does not give the baseline '
                    f'output with {opts}:\n'
                    + r.stderr.decode('utf-8', 'replace')[-3000:])
        self.out = os.path.abspath(args.out or os.path.join(
            self.work, 'fuzz-crashes'))
        os.makedirs(self.out, exist_ok=True)

    # -- cases --

    def share_step(self, archive, opts, verbose, name='share'):
        args = [self.python, '-X', 'faulthandler', '-X', 'cds=share',
                '-X', f'cds_archive={archive}', '-X', f'cds_verbose={verbose}']
        for o in opts:
            args += ['-X', o]
        return Step(name, args + [self.main], self.args.timeout)

    def pick_options(self, rng, target):
        opts = []
        for o in self.extras:
            p = 0.75 if (o == 'cds_relocate' and target == 'records') else 0.4
            if rng.random() < p:
                opts.append(o)
        return opts

    def new_case(self, number):
        """Case 'number': its record, and the generator of its steps
        (it yields a Step, gets it back run, yields the next)."""
        rng = random.Random(f'{self.args.seed}/{number}')
        targets = self.targets
        target = rng.choices(targets,
                             [TARGET_WEIGHTS[t] for t in targets])[0]
        case_dir = os.path.join(self.cases, f'{number:06d}')
        os.mkdir(case_dir)
        record = {'case': number, 'target': target, 'dir': case_dir,
                  'hash_seed': rng.getrandbits(32), 'steps': [],
                  'notes': [], 'outcome': None, 'worst': None}
        return record, self.case_steps(rng, record)

    def case_steps(self, rng, record):
        try:
            if record['target'] == 'list':
                yield from self.list_case(rng, record, record['dir'])
            else:
                yield from self.archive_case(rng, record, record['dir'],
                                             record['target'])
        except FuzzerBug as exc:
            record['outcome'] = 'skipped'
            record['notes'].append(str(exc))
        except Exception:
            # a bug of this script: counted and shown once, never fatal
            record['outcome'] = 'skipped'
            record['notes'].append(f'case {record["target"]} failed:\n'
                                   + traceback.format_exc())

    def make_archive_case(self, rng, target, case_dir):
        try:
            return ARCHIVE_MUTATORS[target](rng, self.model)
        except Exception:
            tb = traceback.format_exc()
            raise FuzzerBug(f'mutator {target} failed:\n{tb}')

    def archive_case(self, rng, record, case_dir, target):
        data, notes, expect, level = self.make_archive_case(rng, target,
                                                            case_dir)
        record['notes'] = notes
        record['expect'] = expect
        record['level'] = level
        path = os.path.join(case_dir, 'app.arc')
        write_private(path, data)
        opts = self.pick_options(rng, target)
        record['options'] = opts
        step = self.share_step(path, opts, rng.choice([1, 1, 1, 2]))
        yield step
        self.judge(record, step, expect)

    def list_case(self, rng, record, case_dir):
        body, notes = mutate_list(rng, self.list_bytes, case_dir)
        record['notes'] = notes
        record['expect'] = 'baseline'
        lst = os.path.join(case_dir, 'app.lst')
        if body is not None:
            write_private(lst, body)
        archive = os.path.join(case_dir, 'out.arc')
        dump = Step('dump', [self.python, '-X', 'faulthandler',
                             '-X', 'cds=dump', '-X', f'cds_list={lst}',
                             '-X', f'cds_archive={archive}',
                             '-X', 'cds_verbose'], self.args.timeout)
        yield dump
        self.judge(record, dump, None)
        record['options'] = self.pick_options(rng, 'list')
        if dump.returncode == 0 and os.path.isfile(archive):
            share = self.share_step(archive, record['options'], 1,
                                    'share-dumped')
            yield share
            self.judge(record, share, 'baseline')
        # the trace merges into a fresh copy of the mutated list
        merged = os.path.join(case_dir, 'merged.lst')
        if body is not None:
            write_private(merged, body)
        else:
            merged = lst     # the special file itself
        trace = Step('trace', [self.python, '-X', 'faulthandler',
                               '-X', 'cds=trace', '-X', f'cds_list={merged}',
                               '-X', 'cds_verbose', self.main],
                     self.args.timeout)
        yield trace
        self.judge(record, trace, 'baseline')

    # -- outcomes --

    def judge(self, record, step, expect):
        """Classify one step; the case's outcome is its worst step's."""
        record['steps'].append(step)
        crash = crash_kind(step, self.hide_dirs(), expect)
        for line in step.stderr.splitlines():
            m = re.match(r"cds: (?:archive '.*' not used|module \S+): (.*)",
                         line)
            if m:
                reason = m.group(1)
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
        info = parse_info(step.stderr)
        if crash:
            step.crash = crash
            level = record.get('level', 0)
            covered = level == 0 or (level == 1 and 'cds_verify'
                                     in record.get('options', ()))
            outcome = 'crash' if covered or self.args.strict else 'unchecked'
        elif getattr(step, 'not_started', False):
            outcome = 'error'
        elif expect is None:         # a dump: exit 0 or 1, nothing else
            outcome = ('served' if step.returncode == 0
                       else 'refused' if step.returncode == 1 else 'error')
        elif step.returncode == 0 and step.stdout == self.baseline:
            outcome = ('served' if step.name == 'trace'
                       or info.get('active') and not info.get('rejected')
                       else 'refused')
        else:
            outcome = 'error' if expect == 'any' else 'undetected'
        order = [None, 'served', 'refused', 'error', 'undetected',
                 'unchecked', 'crash']
        if order.index(outcome) > order.index(record['outcome']):
            record['outcome'] = outcome
            record['worst'] = step

    def hide_dirs(self):
        return [self.work, ROOT, sys.prefix, os.path.dirname(os.__file__),
                os.path.dirname(self.python)]

    def finish_case(self, record):
        target, outcome = record['target'], record['outcome']
        counts = self.stats.setdefault(target, {})
        counts['runs'] = counts.get('runs', 0) + 1
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == 'skipped':
            key = record['notes'][-1].splitlines()[-1]
            if key not in self.fuzzer_errors:
                print(f'fuzzer error (case {record["case"]}): '
                      f'{record["notes"][-1]}', file=sys.stderr)
            self.fuzzer_errors[key] = self.fuzzer_errors.get(key, 0) + 1
        if outcome in self.found:
            saved = self.save(record)
            self.found[outcome].append((record, saved))
            if outcome == 'crash' or len(self.found[outcome]) <= 3:
                print(f'{outcome}: case {record["case"]} ({target}, '
                      f'{getattr(record["worst"], "crash", "")}, '
                      f'{" ".join(record.get("options", []))}): '
                      f'{"; ".join(record["notes"])}'
                      f'{" -> " + saved if saved else ""}', flush=True)
        if self.args.replay is not None:
            self.show(record)
        if not (self.args.keep or self.args.replay is not None):
            rmtree(record['dir'])

    def save(self, record):
        """Copy the case's input with a script to rerun it; its path."""
        if self.saved[record['outcome']] >= self.args.max_saved:
            return None
        try:
            return self.save_case(record)
        except OSError as exc:
            print(f'cannot save case {record["case"]}: {exc}',
                  file=sys.stderr)
            return None

    def save_case(self, record):
        self.saved[record['outcome']] += 1
        sub = '' if record['outcome'] == 'crash' else record['outcome']
        dest = os.path.join(self.out, sub, f'{record["target"]}-'
                            f'{self.args.seed}-{record["case"]:06d}')
        copy_tree(record['dir'], dest)
        step = record['worst']
        args = [a.replace(record['dir'], dest) for a in step.args]
        with open(os.path.join(dest, 'cmd.sh'), 'w') as f:
            f.write('#!/bin/sh\n')
            f.write(f'# pycds fuzz: seed {self.args.seed}, case '
                    f'{record["case"]}, target {record["target"]}, '
                    f'step {step.name}: {record["outcome"]} '
                    f'{getattr(step, "crash", "")}\n')
            f.write('# the archive is only valid for this interpreter '
                    'binary and this application directory\n')
            for note in record['notes']:
                f.write(f'#   {note}\n')
            f.write(f'cd {shlex.quote(self.app)} || exit 1\n')
            f.write(f'exec env PYTHONHASHSEED={record["hash_seed"]} '
                    'PYTHONDONTWRITEBYTECODE=1 '
                    + ' '.join(shlex.quote(a) for a in args) + '\n')
        os.chmod(os.path.join(dest, 'cmd.sh'), 0o755)
        for s in record['steps']:
            for what in ('stdout', 'stderr'):
                with open(os.path.join(dest, f'{s.name}.{what}.txt'), 'w',
                          encoding='utf-8', errors='replace') as f:
                    f.write(getattr(s, what))
        with open(os.path.join(dest, 'case.json'), 'w') as f:
            json.dump({'seed': self.args.seed, 'case': record['case'],
                       'target': record['target'],
                       'outcome': record['outcome'],
                       'crash': getattr(step, 'crash', None),
                       'step': step.name, 'returncode': step.returncode,
                       'options': record.get('options', []),
                       'level': LEVELS[record.get('level', 0)],
                       'hash_seed': record['hash_seed'],
                       'notes': record['notes'], 'args': args,
                       'python': self.python, 'app': self.app}, f, indent=1)
        return dest

    def show(self, record):
        print(json.dumps({k: record.get(k) for k in
                          ('case', 'target', 'outcome', 'options', 'notes',
                           'expect', 'hash_seed', 'dir')}, indent=1))
        for s in record['steps']:
            print(f'--- {s.name}: exit {s.returncode}'
                  f'{" (timeout)" if s.timed_out else ""}: '
                  + ' '.join(shlex.quote(a) for a in s.args))
            print(s.stdout[-2000:] if s.stdout != self.baseline
                  else '[baseline output]')
            print(s.stderr[-4000:])

    # -- the loop --

    def start(self, steps, step, record):
        # output to files, not pipes: no thread, no pipe to drain
        step.out = os.path.join(record['dir'], f'{step.name}.out')
        step.err = os.path.join(record['dir'], f'{step.name}.err')
        try:
            with open(step.out, 'wb') as out, open(step.err, 'wb') as err:
                step.proc = subprocess.Popen(
                    step.args, cwd=self.app,
                    env=self.env(record['hash_seed']),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    start_new_session=True,
                    preexec_fn=child_limits(self.args.memory))
        except (OSError, subprocess.SubprocessError) as exc:
            # the interpreter being rebuilt, say: not the case's fault
            step.returncode = 127
            step.not_started = True
            step.stderr = f'cannot run the interpreter: {exc}'
            self.done.append((steps, step, record))
            return
        step.deadline = time.monotonic() + step.timeout
        self.processes += 1
        self.running.append((steps, step, record))

    def advance(self, steps, value, record):
        """Send the finished step back (None to begin); start the next
        one, or finish the case."""
        try:
            step = steps.send(value)
        except StopIteration:
            if record['outcome'] is None:
                record['outcome'] = 'skipped'
            self.finish_case(record)
            return
        self.start(steps, step, record)

    def poll(self):
        still = []
        for steps, step, record in self.running:
            rc = step.proc.poll()
            if rc is None and time.monotonic() > step.deadline:
                step.timed_out = True
                kill_group(step.proc)
                rc = step.proc.wait()
            if rc is None:
                still.append((steps, step, record))
                continue
            step.returncode = rc
            step.stdout = read_text(step.out)
            step.stderr = read_text(step.err)
            self.done.append((steps, step, record))
        self.running = still

    def binary_changed(self):
        """Whether the interpreter was replaced (rebuilt) since set-up:
        every archive is then another build's, and each run meaningless."""
        try:
            st = os.stat(self.python)
            now = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            now = None
        if now != self.binary:
            self.changed = True
        return self.changed

    def run(self):
        args = self.args
        self.targets = args.targets
        t0 = time.monotonic()
        end = t0 + args.seconds
        number = args.replay if args.replay is not None else 0
        next_check = t0

        def may_start():
            if args.replay is not None:
                return number == args.replay
            return time.monotonic() < end and not self.changed

        try:
            while True:
                if time.monotonic() > next_check:
                    next_check = time.monotonic() + 2
                    self.binary_changed()
                while len(self.running) < args.jobs and may_start():
                    record, steps = self.new_case(number)
                    number += 1
                    self.advance(steps, None, record)
                self.poll()
                while self.done:
                    batch, self.done = self.done, []
                    for steps, step, record in batch:
                        self.advance(steps, step, record)
                if not self.running and not may_start():
                    break
                if self.running:
                    time.sleep(0.005)
        except KeyboardInterrupt:
            for _, step, _ in self.running:
                kill_group(step.proc)
                step.proc.wait()
            print('interrupted', file=sys.stderr)
        self.elapsed = time.monotonic() - t0
        self.cases_run = number - (args.replay or 0)

    # -- the report --

    def summary(self):
        cols = ['runs', 'served', 'refused', 'error', 'undetected',
                'unchecked', 'crash', 'skipped']
        lines = [f'pycds fuzz: seed {self.args.seed}, {self.elapsed:.1f} s, '
                 f'{self.cases_run} cases, {self.processes} processes '
                 f'({self.processes / max(self.elapsed, 1e-9):.1f}/s), '
                 f'jobs {self.args.jobs}, python {self.python}',
                 f'{"target":<9}' + ''.join(f'{c:>11}' for c in cols)]
        total = {}
        for t in self.targets:
            counts = self.stats.get(t, {})
            for c in cols:
                total[c] = total.get(c, 0) + counts.get(c, 0)
            lines.append(f'{t:<9}' + ''.join(f'{counts.get(c, 0):>11}'
                                             for c in cols))
        lines.append(f'{"total":<9}' + ''.join(f'{total.get(c, 0):>11}'
                                               for c in cols))
        if self.reasons:
            lines.append('reasons given (-X cds_verbose), most frequent:')
            for reason, n in sorted(self.reasons.items(),
                                    key=lambda kv: -kv[1])[:12]:
                lines.append(f'  {n:6}  {reason}')
        titles = {
            'crash': 'crashes',
            'unchecked': 'crashes in what the checks do not cover with '
                         'the options used or in trusted content (which '
                         'object a constant is, the bytecode)',
            'undetected': 'undetected: not the baseline output where it '
                          'had to be (damage, or fields the reader resets)'}
        for outcome, title in titles.items():
            found = self.found[outcome]
            if not found:
                continue
            lines.append(f'{title}:')
            for record, saved in found[:40]:
                step = record['worst']
                lines.append(f'  case {record["case"]} {record["target"]} '
                             f'{step.name} {getattr(step, "crash", "")} '
                             f'{record.get("options", [])} '
                             f'[{LEVELS[record.get("level", 0)]}]: '
                             f'{"; ".join(record["notes"])}')
                if saved:
                    lines.append(f'      {saved}/cmd.sh')
        if self.changed:
            lines.append(f'warning: {self.python} changed during the run '
                         '(rebuilt?): the run stopped early, and the runs '
                         'near the change may be meaningless')
        crashes = self.found['crash']
        lines.append(f'crashes: {len(crashes)}'
                     + (f' (saved in {self.out})' if crashes else ''))
        return '\n'.join(lines)


class SetupError(Exception):
    pass


class FuzzerBug(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Mutation fuzzer of pycds archives and module lists.')
    p.add_argument('--seconds', type=float, default=60,
                   help='how long to start new cases (default 60)')
    p.add_argument('--seed', type=int, default=None,
                   help='the seed (default: random, printed)')
    p.add_argument('--targets', default=','.join(TARGETS),
                   help='comma-separated, of ' + ', '.join(TARGETS))
    p.add_argument('--out', help='where crashing inputs are saved '
                   '(default: fuzz-crashes in the work directory)')
    p.add_argument('--jobs', type=int, default=1,
                   help='subprocesses in parallel (default 1)')
    p.add_argument('--timeout', type=float, default=10,
                   help='seconds before a run counts as a hang (default 10)')
    p.add_argument('--memory', type=int, default=None,
                   help='address-space limit of each run in MB (default '
                   '4096, none in a sanitizer build; 0: none)')
    p.add_argument('--max-saved', type=int, default=50,
                   help='inputs saved at most, of each outcome (default 50)')
    p.add_argument('--replay', type=int, default=None, metavar='CASE',
                   help='run only case CASE of the seed, and show it')
    p.add_argument('--strict', action='store_true',
                   help='count crashes in what the checks do not cover '
                   '(nested constants; direct ones without -X cds_verify) '
                   'as crashes')
    p.add_argument('--keep', action='store_true',
                   help='keep every case directory and the work directory')
    p.add_argument('--workdir', help='where to make the work directory '
                   '(default: the temporary directory)')
    p.add_argument('--python', default=sys.executable,
                   help='the interpreter to fuzz (default: this one)')
    p.add_argument('--format', help='the path of the format reader to use '
                   '(default: test.test_cds.format)')
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(',') if t.strip()]
    bad = [t for t in args.targets if t not in TARGETS]
    if bad or not args.targets:
        p.error(f'unknown targets {bad}: choose among {", ".join(TARGETS)}')
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    if args.memory is None:
        flags = sysconfig.get_config_var('PY_CFLAGS') or ''
        args.memory = 0 if '-fsanitize' in flags else 4096
    args.jobs = max(1, args.jobs)
    return args


def main(argv=None):
    args = parse_args(argv)
    fuzzer = Fuzzer(args)
    try:
        fuzzer.setup()
    except (SetupError, OSError) as exc:
        print(f'pycds fuzz: set-up failed: {exc}', file=sys.stderr)
        return 2
    print(f'pycds fuzz: seed {args.seed}, targets {",".join(args.targets)}, '
          f'options {" ".join(fuzzer.extras)}, work directory '
          f'{fuzzer.work}, crashes to {fuzzer.out}', flush=True)
    try:
        fuzzer.run()
    finally:
        if sum(fuzzer.saved.values()):
            print(f'work directory kept (the saved cases need its '
                  f'application): {fuzzer.work}', file=sys.stderr)
        elif args.keep or args.replay is not None:
            print(f'work directory kept: {fuzzer.work}', file=sys.stderr)
        else:
            rmtree(fuzzer.work)
    print(fuzzer.summary())
    return 1 if fuzzer.found['crash'] else 0
