"""The runs of a case: one subprocess a step, its limits and output; what
makes a run a crash; the case files."""

import json
import os
import re
import resource
import shutil
import signal
import stat


class Step:
    """One interpreter run of a case."""

    def __init__(self, name, args, timeout):
        self.name = name
        self.args = args
        self.timeout = timeout
        self.proc = None
        self.deadline = None
        self.returncode = None
        self.timed_out = False
        self.stdout = self.stderr = ''


def child_limits(memory_mb):
    def limit():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # runaway output stops with SIGXFSZ, a crash
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS,
                               (memory_mb << 20, memory_mb << 20))
    return limit


def read_text(path, limit=1 << 20):
    """The text of a child's output file, its start and end if long."""
    try:
        with open(path, 'rb') as f:
            data = f.read(limit + 1)
            if len(data) > limit:
                f.seek(-limit // 2, os.SEEK_END)
                data = data[:limit // 2] + b'\n[...]\n' + f.read()
    except OSError:
        return ''
    return data.decode('utf-8', 'replace')


SANITIZER = re.compile(r'ERROR: AddressSanitizer|\.c:\d+:\d+: runtime error:')
FATAL = re.compile(r'^Fatal Python error: (.*)$', re.MULTILINE)
CDS_WORD = re.compile(r'cds', re.IGNORECASE)


def tracebacks(text):
    """The Python tracebacks in 'text', each with its exception line."""
    # the archive's log lines interleave with a traceback on stderr
    lines = [ln for ln in text.splitlines()
             if not ln.startswith(('cds: ', 'FZINFO '))]
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].startswith('Traceback (most recent call last):'):
            j = i + 1
            while j < len(lines) and lines[j][:1] in (' ', '\t'):
                j += 1
            blocks.append('\n'.join(lines[i:j + 1]))
            i = j + 1
        else:
            i += 1
    return blocks


def parse_info(stderr):
    for line in reversed(stderr.splitlines()):
        if line.startswith('FZINFO '):
            try:
                return json.loads(line[7:])
            except ValueError:
                return {}
    return {}


def crash_kind(step, hide, expect):
    """Why the run is a crash, or None.  A "Fatal Python error" with an
    exit status (no signal) is how start-up fails when forged content
    raises in a start-up module: a crash only where the content could not
    change ('expect' is not 'any'), or if it names the archive code."""
    if step.timed_out:
        return 'timeout'
    if step.returncode is not None and step.returncode < 0:
        try:
            return signal.Signals(-step.returncode).name
        except ValueError:
            return f'signal {-step.returncode}'
    if SANITIZER.search(step.stderr):
        return 'sanitizer'
    m = FATAL.search(step.stderr)
    if m and (expect != 'any' or CDS_WORD.search(m.group(1))):
        return 'Fatal Python error'
    for block in tracebacks(step.stderr):
        for d in sorted(hide, key=len, reverse=True):
            if d:
                block = block.replace(d, '<dir>')
        if CDS_WORD.search(block):
            return 'cds traceback'
    return None


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def write_private(path, data):
    """The archive must be its owner's only (share mode refuses others')."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, 'wb') as f:
        f.write(data)


def copy_tree(src, dest):
    """Copy a case directory: FIFOs and links as they are."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dest, name)
        st = os.lstat(s)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(d)
        elif stat.S_ISDIR(st.st_mode):
            copy_tree(s, d)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(s, d)


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
