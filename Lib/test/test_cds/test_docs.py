"""The pycds pages of Doc/ parse as reStructuredText without warnings.

Sphinx is not needed: the pages are parsed with docutils, with the Sphinx
and CPython roles and directives they use (:mod:, :envvar:, .. module::,
.. function:: ...) registered as stand-ins that accept anything and parse
their content, so that what is reported is a real reStructuredText problem
(a malformed table, a bad indentation, an unknown role or directive, a title
underline too short).

docutils is not part of the standard library: the check runs in a child
process of the first interpreter found that can import it (this one, then
python3 on PATH, then /usr/bin/python3, which Debian's python3-docutils
serves; Tools/pycds/install-deps installs that package).  The test is
skipped only when none can.

Run as a script, "test_docs.py --check PAGE..." prints the problems found in
the pages (nothing when they are clean).
"""

import os
import shutil
import subprocess
import sys
import unittest

# Lib/test/test_cds/ -> the source tree root.
SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))

# Our pages: the pycds pages, and the upstream pages our patches change.
PAGES = [
    "Doc/library/cds.rst",
    "Doc/library/cds-format.rst",
    "Doc/library/cds-container.rst",
    "Doc/library/python.rst",
    "Doc/using/cmdline.rst",
]

# Roles and directives of Sphinx (and of CPython's Doc/tools/extensions)
# that docutils does not know.
SPHINX_ROLES = """
    abbr attr c:data c:func c:macro c:member c:type c:var class command
    const data dfn doc envvar exc file func gh guilabel issue kbd keyword
    makevar manpage meth mimetype mod monitoring-event newsgroup numref obj
    opcode option program py:attr py:class py:data py:exc py:func py:meth
    py:mod py:obj pypi ref samp source term token
""".split()
SPHINX_DIRECTIVES = """
    attribute audit-event availability c:function c:macro c:member c:type
    c:var class cmdoption code-block coroutinefunction currentmodule data
    decorator deprecated deprecated-removed describe envvar exception
    function glossary highlight impl-detail index literalinclude method
    module moduleauthor opcode option productionlist program
    py:attribute py:class py:data py:exception py:function py:method
    py:module sectionauthor seealso staticmethod toctree versionadded
    versionchanged
""".split()


def check_pages(paths):
    """Return the docutils warnings and errors for the pages, as text."""
    import io
    import docutils.core
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives, roles

    def stand_in_role(name, rawtext, text, lineno, inliner,
                      options=None, content=None):
        return [nodes.literal(rawtext, text)], []

    class AnyOption(dict):
        def __missing__(self, key):
            return directives.unchanged

    class StandInDirective(Directive):
        required_arguments = 0
        optional_arguments = 100
        final_argument_whitespace = True
        option_spec = AnyOption()
        has_content = True

        def run(self):
            node = nodes.container()
            if self.content:
                self.state.nested_parse(self.content, self.content_offset,
                                        node)
            return [node]

    for name in SPHINX_ROLES:
        roles.register_local_role(name, stand_in_role)
    for name in SPHINX_DIRECTIVES:
        directives.register_directive(name, StandInDirective)

    report = io.StringIO()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        docutils.core.publish_doctree(
            text, source_path=path,
            settings_overrides={
                "report_level": 2,         # warnings and errors
                "halt_level": 5,           # never stop: report them all
                "warning_stream": report,
                "file_insertion_enabled": False,
                "raw_enabled": False,
            })
    return report.getvalue()


def find_docutils_python():
    """An interpreter that can import docutils, or None."""
    candidates = [sys.executable, shutil.which("python3"), "/usr/bin/python3"]
    seen = set()
    for python in candidates:
        if not python or python in seen or not os.access(python, os.X_OK):
            continue
        seen.add(python)
        try:
            proc = subprocess.run([python, "-E", "-c", "import docutils"],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            return python
    return None


def run_check(python, paths):
    """Check the pages with 'python'; return (exit status, output)."""
    proc = subprocess.run([python, "-E", os.path.abspath(__file__),
                           "--check", *paths],
                          cwd=SRC_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc.returncode, proc.stdout


class DocPagesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        missing = [p for p in PAGES
                   if not os.path.isfile(os.path.join(SRC_ROOT, p))]
        if missing:
            raise unittest.SkipTest("not a pycds source tree (no %s)"
                                    % ", ".join(missing))
        cls.python = find_docutils_python()
        if cls.python is None:
            raise unittest.SkipTest(
                "docutils is not available to this interpreter, python3 or "
                "/usr/bin/python3 (Debian: apt-get install python3-docutils)")

    def test_pages_parse_without_warnings(self):
        status, output = run_check(self.python, PAGES)
        self.assertEqual(status, 0, output)
        if output:
            self.fail("docutils reports problems in the Doc pages (with %s):\n%s"
                      % (self.python, output))

    def test_check_reports_problems(self):
        # The check itself: a malformed table, an unknown role, a bad
        # underline are reported; the Sphinx constructs the pages use are not.
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            good = os.path.join(tmp, "good.rst")
            bad = os.path.join(tmp, "bad.rst")
            with open(good, "w", encoding="utf-8") as f:
                f.write(".. module:: m\n   :synopsis: s\n\n"
                        "Title\n=====\n\n"
                        ".. function:: f(x)\n\n   Uses :envvar:`X` and "
                        ":option:`-X cds <-X>`, :mod:`!m`.\n")
            with open(bad, "w", encoding="utf-8") as f:
                f.write("A title\n=====\n\n"
                        "=====  =====\n"
                        "a      b\n"
                        "=====  =====\n"
                        "``long text``  c\n"
                        "=====  =====\n\n"
                        ":nosuchrole:`x`\n")
            status, output = run_check(self.python, [good])
            self.assertEqual((status, output), (0, ""))
            status, output = run_check(self.python, [bad])
            self.assertEqual(status, 0, output)
            self.assertIn("Title underline too short", output)
            self.assertIn("Text in column margin", output)
            self.assertIn('Unknown interpreted text role "nosuchrole"', output)


def main(argv):
    if len(argv) >= 2 and argv[0] == "--check":
        sys.stdout.write(check_pages(argv[1:]))
        return 0
    print("usage: test_docs.py --check PAGE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1:]))
    unittest.main()
