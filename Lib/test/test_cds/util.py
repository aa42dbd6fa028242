"""Helpers shared by the pycds tests."""

import os
import subprocess
import sys

# Environment variables that change what a cds run does; tests start from
# an environment without them.
CDS_ENV_VARS = (
    'PYTHONCDS', 'PYTHONCDSLIST', 'PYTHONCDSARCHIVE', 'PYTHONCDSVERBOSE',
    'PYCDSMODE', 'PYCDSLIST', 'PYCDSARCHIVE', 'PYCDSVERBOSE',
    'PYTHONCDSPROTECT', 'PYTHONCDSSTATS',
)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in CDS_ENV_VARS}
    env.update(extra)
    return env


def run_python(*args, env=None, cwd=None, input=None, timeout=300):
    """Run the interpreter under test; return CompletedProcess (text)."""
    cmd = [sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=clean_env() if env is None else env,
                          cwd=cwd, input=input, timeout=timeout)


def read_list(path):
    """Parse a module list into [(name, kind, path-or-None)]."""
    entries = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.rstrip('\n')
            if not line or line.startswith('#'):
                continue
            fields = line.split('\t')
            entries.append((fields[0], fields[1],
                            fields[2] if len(fields) > 2 else None))
    return entries
