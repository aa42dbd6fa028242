"""Tests for the pycds developer tools ./bootstrap and Tools/pycds/patches.

Each test works in a scratch git repository holding copies of the tools.
Most tests bootstrap a tiny fake upstream tarball, accepted through the
documented testing hook PYCDS_UPSTREAM_SHA256; RealUpstreamTests lays the
real CPython tarball (only if it is already cached: never downloads).
"""

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import unittest

# Lib/test/test_cds/ -> the source tree root.
SRC_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
BOOTSTRAP = os.path.join(SRC_ROOT, "bootstrap")
PATCHES_TOOL = os.path.join(SRC_ROOT, "Tools", "pycds", "patches")
TOP_DIR = "Python-3.13.5"
REAL_TARBALL = "python3.13_3.13.5.orig.tar.xz"


def _skip_reason():
    if not os.path.isfile(BOOTSTRAP) or not os.path.isfile(PATCHES_TOOL):
        return "not a pycds source tree (no ./bootstrap or patches tool)"
    if not os.path.isdir(os.path.join(SRC_ROOT, ".git", "pycds", "pristine")):
        return "source tree not bootstrapped (no .git/pycds/pristine)"
    for tool in ("git", "patch", "diff", "python3"):
        if shutil.which(tool) is None:
            return "%s not found on PATH" % tool
    return None


SKIP_REASON = _skip_reason()

# The fake upstream tree: path -> (content, executable).
FAKE_FILES = {
    "configure": (b"#! /bin/sh\necho configuring\n", True),
    "configure.ac": (b"AC_INIT([python])\n", False),
    "Python/ceval.c": (b"".join(b"line %d\n" % i for i in range(1, 31)),
                       False),
    "Lib/os.py": (b"".join(b"# os %d\n" % i for i in range(1, 21)), False),
    "Lib/noeol.txt": (b"first\nno newline at end", False),
    "Doc/a[1]*.txt": (b"glob characters in the name\n", False),
    "Mac/Disk Image.icns": (b"icon\n", False),
}

CEVAL_PATCH = b"""\
--- a/Python/ceval.c
+++ b/Python/ceval.c
@@ -12,7 +12,7 @@
 line 12
 line 13
 line 14
-line 15
+pycds 15
 line 16
 line 17
 line 18
"""


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def snapshot(top):
    """{relative path: (content, mode, mtime)} of every file (not .git/
    objects, but including .git/info/exclude)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".git":
            dirnames[:] = ["info"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            result[os.path.relpath(path, top)] = (
                read(path), st.st_mode, st.st_mtime_ns)
    return result


@unittest.skipIf(SKIP_REASON, SKIP_REASON)
class ToolTestBase(unittest.TestCase):
    """Scratch repositories with the tools and a fake upstream tarball."""

    @classmethod
    def setUpClass(cls):
        cls.class_tmp = tempfile.mkdtemp(prefix="pycds-tools-")
        cls.addClassCleanup(shutil.rmtree, cls.class_tmp, True)
        cls.tarball = os.path.join(cls.class_tmp, REAL_TARBALL)
        try:
            import lzma  # noqa: F401  (the tools autodetect compression)
            mode = "w:xz"
        except ImportError:
            mode = "w"
        with tarfile.open(cls.tarball, mode) as tf:
            for path, (data, executable) in sorted(FAKE_FILES.items()):
                info = tarfile.TarInfo(TOP_DIR + "/" + path)
                info.size = len(data)
                info.mode = 0o755 if executable else 0o644
                info.mtime = 1700000000
                tf.addfile(info, io.BytesIO(data))
        cls.tarball_sha = hashlib.sha256(read(cls.tarball)).hexdigest()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pycds-repo-", dir=self.class_tmp)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.env = dict(os.environ,
                        PYCDS_UPSTREAM_TARBALL=self.tarball,
                        PYCDS_UPSTREAM_SHA256=self.tarball_sha,
                        XDG_CACHE_HOME=os.path.join(self.tmp, "cache"),
                        LC_ALL="C")
        self.repo = self.make_repo("repo", {"Python/ceval.c": CEVAL_PATCH})

    def make_repo(self, name, patches):
        """A fresh git repository with the tools and the given patches."""
        repo = os.path.join(self.tmp, name)
        os.makedirs(os.path.join(repo, "Tools", "pycds"))
        subprocess.run(["git", "init", "-q", repo], check=True)
        shutil.copy2(BOOTSTRAP, os.path.join(repo, "bootstrap"))
        shutil.copy2(PATCHES_TOOL, os.path.join(repo, "Tools/pycds/patches"))
        for path, data in patches.items():
            write(os.path.join(repo, "pycds-patches", path + ".patch"), data)
        return repo

    def run_tool(self, *args, repo=None, env=None):
        """Run ./bootstrap or Tools/pycds/patches; return (rc, output)."""
        repo = repo or self.repo
        proc = subprocess.run(
            [os.path.join(repo, args[0])] + list(args[1:]), cwd=repo,
            env=env or self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, universal_newlines=True)
        return proc.returncode, proc.stdout

    def bootstrap(self, *args, repo=None, env=None, ok=True):
        rc, out = self.run_tool("bootstrap", *args, repo=repo, env=env)
        if ok:
            self.assertEqual(rc, 0, out)
        else:
            self.assertNotEqual(rc, 0, out)
        return out

    def patches(self, *args, repo=None):
        return self.run_tool("Tools/pycds/patches", *args, repo=repo)

    def path(self, rel, repo=None):
        return os.path.join(repo or self.repo, rel)

    def upstream_snapshot(self, repo):
        """Content and mode of the laid upstream files."""
        return {p: (read(self.path(p, repo)),
                    os.stat(self.path(p, repo)).st_mode)
                for p in FAKE_FILES}


class BootstrapTests(ToolTestBase):

    def test_help(self):
        rc, out = self.run_tool("bootstrap", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("PYCDS_UPSTREAM_SHA256", out)
        rc, out = self.patches("--help")
        self.assertEqual(rc, 0)
        for command in ("apply", "refresh", "check"):
            self.assertIn(command, out)

    def test_fresh_bootstrap(self):
        self.bootstrap()
        self.assertEqual(read(self.path("Python/ceval.c")),
                         FAKE_FILES["Python/ceval.c"][0].replace(
                             b"line 15\n", b"pycds 15\n"))
        self.assertEqual(read(self.path("Lib/noeol.txt")),
                         FAKE_FILES["Lib/noeol.txt"][0])
        self.assertTrue(os.access(self.path("configure"), os.X_OK))
        self.assertEqual(read(self.path(".git/pycds/upstream-files")).decode(),
                         "".join(p + "\n" for p in sorted(FAKE_FILES)))
        self.assertTrue(os.path.isdir(self.path(".git/pycds/pristine")))
        rc, out = self.patches("check")
        self.assertEqual(rc, 0, out)
        self.assertIn("patches: clean (1 patched files)", out)

    def test_git_ignores_upstream_files_only(self):
        self.bootstrap()
        write(self.path("Python/cds_archive.c"), b"/* ours */\n")
        write(self.path("Doc/a1x.txt"), b"matches the glob if unescaped\n")
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=self.repo, stdout=subprocess.PIPE, check=True,
            universal_newlines=True).stdout.splitlines()
        untracked = sorted(line[3:] for line in status)
        self.assertEqual(untracked, ["Doc/a1x.txt", "Python/cds_archive.c",
                                     "Tools/pycds/patches", "bootstrap",
                                     "pycds-patches/Python/ceval.c.patch"])

    def test_rerun_is_idempotent_and_keeps_build_outputs(self):
        self.bootstrap()
        # Build outputs in the upstream tree must survive untouched.
        for rel in ("Makefile", "Python/ceval.o", "python", "pyconfig.h",
                    "Lib/__pycache__/os.cpython-313.pyc",
                    "Modules/Setup.local"):
            write(self.path(rel), b"build output\n")
        before = snapshot(self.repo)
        out = self.bootstrap()
        self.assertIn("0 written", out)
        after = snapshot(self.repo)
        self.assertEqual(before.keys(), after.keys())
        for rel in before:
            if not rel.startswith(".git"):
                self.assertEqual(before[rel], after[rel], rel)

    def test_patch_set_changed_upstream(self):
        # Like a "git pull" that changed pycds-patches/: the tree holds the
        # old laid result, which may be replaced without --force.
        self.bootstrap()
        write(self.path("pycds-patches/Python/ceval.c.patch"),
              CEVAL_PATCH.replace(b"+pycds 15", b"+pycds v2 15"))
        self.bootstrap()
        self.assertIn(b"pycds v2 15\n", read(self.path("Python/ceval.c")))
        # A patch set removed entirely restores pristine content.
        shutil.rmtree(self.path("pycds-patches"))
        self.bootstrap()
        self.assertEqual(read(self.path("Python/ceval.c")),
                         FAKE_FILES["Python/ceval.c"][0])

    def test_refuses_to_overwrite_unrefreshed_edit(self):
        self.bootstrap()
        edited = b"# local work\n"
        write(self.path("Lib/os.py"), edited)
        out = self.bootstrap(ok=False)
        self.assertIn("Lib/os.py", out)
        self.assertIn("--force", out)
        self.assertEqual(read(self.path("Lib/os.py")), edited)
        self.bootstrap("--force")
        self.assertEqual(read(self.path("Lib/os.py")),
                         FAKE_FILES["Lib/os.py"][0])
        rc, out = self.patches("check")
        self.assertEqual(rc, 0, out)

    def test_tracked_upstream_path_is_left_alone(self):
        ours = b"# our own complete version\n"
        write(self.path("Lib/os.py"), ours)
        subprocess.run(["git", "add", "Lib/os.py"], cwd=self.repo, check=True)
        out = self.bootstrap()
        self.assertIn("tracked by git", out)
        self.assertEqual(read(self.path("Lib/os.py")), ours)
        rc, out = self.patches("check")
        self.assertEqual(rc, 0, out)

    def test_wrong_checksum(self):
        env = dict(self.env, PYCDS_UPSTREAM_SHA256="0" * 64)
        out = self.bootstrap(env=env, ok=False)
        self.assertIn("checksum mismatch", out)
        self.assertIn(self.tarball, out)
        self.assertIn("0" * 64, out)
        self.assertIn(self.tarball_sha, out)
        self.assertFalse(os.path.exists(self.path(".git/pycds/pristine")))
        for rel in FAKE_FILES:
            self.assertFalse(os.path.exists(self.path(rel)), rel)

    def test_missing_tarball(self):
        env = dict(self.env, PYCDS_UPSTREAM_TARBALL=self.path("nonexistent"))
        out = self.bootstrap(env=env, ok=False)
        self.assertIn("nonexistent", out)
        self.assertFalse(os.path.exists(self.path("configure")))

    def test_patch_that_does_not_apply(self):
        bad = CEVAL_PATCH.replace(b" line 14", b" line 14 changed")
        # On a fresh repository: nothing is laid.
        fresh = self.make_repo("fresh", {"Python/ceval.c": bad})
        out = self.bootstrap(repo=fresh, ok=False)
        self.assertIn("does not apply: pycds-patches/Python/ceval.c.patch",
                      out)
        for rel in FAKE_FILES:
            self.assertFalse(os.path.exists(self.path(rel, fresh)), rel)
        # On a bootstrapped tree: nothing changes at all.
        self.bootstrap()
        shutil.rmtree(self.path("pycds-patches"))
        write(self.path("pycds-patches/Python/ceval.c.patch"), bad)
        before = snapshot(self.repo)
        out = self.bootstrap(ok=False)
        self.assertIn("does not apply: pycds-patches/Python/ceval.c.patch",
                      out)
        self.assertEqual(snapshot(self.repo), before)
        rc, out = self.patches("check")
        self.assertNotEqual(rc, 0)
        self.assertIn("does not apply: pycds-patches/Python/ceval.c.patch",
                      out)


class PatchesToolTests(ToolTestBase):

    def setUp(self):
        super().setUp()
        self.bootstrap()

    def test_check_reports_unrefreshed_edit(self):
        with open(self.path("Lib/os.py"), "ab") as f:
            f.write(b"# pycds change\n")
        rc, out = self.patches("check")
        self.assertNotEqual(rc, 0)
        self.assertIn("not in patches: Lib/os.py", out)
        self.assertNotIn("Python/ceval.c", out)

    def test_check_reports_patch_for_non_upstream_file(self):
        write(self.path("pycds-patches/Python/cds_archive.c.patch"),
              CEVAL_PATCH)
        rc, out = self.patches("check")
        self.assertNotEqual(rc, 0)
        self.assertIn("pycds-patches/Python/cds_archive.c.patch", out)

    def test_refresh_then_check_clean(self):
        with open(self.path("Lib/os.py"), "ab") as f:
            f.write(b"# pycds change\n")
        with open(self.path("Lib/noeol.txt"), "ab") as f:
            f.write(b" -- still no newline")
        with open(self.path("configure"), "ab") as f:
            f.write(b"echo pycds\n")
        rc, out = self.patches("refresh")
        self.assertEqual(rc, 0, out)
        for rel in ("Lib/os.py", "Lib/noeol.txt", "configure"):
            self.assertIn("added: pycds-patches/%s.patch" % rel, out)
        patch = read(self.path("pycds-patches/Lib/os.py.patch"))
        self.assertTrue(patch.startswith(
            b"--- a/Lib/os.py\n+++ b/Lib/os.py\n@@ "), patch)
        self.assertIn(b"\\ No newline at end of file",
                      read(self.path("pycds-patches/Lib/noeol.txt.patch")))
        rc, out = self.patches("check")
        self.assertEqual(rc, 0, out)
        self.assertIn("clean (4 patched files)", out)
        # A second refresh changes nothing; bootstrap accepts the tree.
        rc, out = self.patches("refresh")
        self.assertEqual(rc, 0, out)
        self.assertIn("0 added, 0 updated, 0 removed", out)
        self.assertIn("0 written", self.bootstrap())
        # The patches apply with "patch -p1" to a pristine copy ...
        copy = os.path.join(self.tmp, "pristine-copy")
        shutil.copytree(self.path(".git/pycds/pristine"), copy)
        for rel in ("Lib/os.py", "Lib/noeol.txt", "configure"):
            subprocess.run(["patch", "-s", "-p1", "-d", copy, "-i",
                            self.path("pycds-patches/%s.patch" % rel)],
                           check=True)
            self.assertEqual(read(os.path.join(copy, rel)),
                             read(self.path(rel)))
        # ... and a fresh clone gets the very same tree.
        clone = self.make_repo("clone", {})
        shutil.rmtree(self.path("pycds-patches", clone), ignore_errors=True)
        shutil.copytree(self.path("pycds-patches"),
                        self.path("pycds-patches", clone))
        self.bootstrap(repo=clone)
        self.assertEqual(self.upstream_snapshot(clone),
                         self.upstream_snapshot(self.repo))

    def test_refresh_updates_patch(self):
        with open(self.path("Python/ceval.c"), "ab") as f:
            f.write(b"/* more */\n")
        rc, out = self.patches("refresh")
        self.assertEqual(rc, 0, out)
        self.assertIn("updated: pycds-patches/Python/ceval.c.patch", out)
        self.assertIn(b"+/* more */",
                      read(self.path("pycds-patches/Python/ceval.c.patch")))

    def test_refresh_removes_patch_of_reverted_file(self):
        shutil.copy2(self.path(".git/pycds/pristine/Python/ceval.c"),
                     self.path("Python/ceval.c"))
        rc, out = self.patches("check")
        self.assertNotEqual(rc, 0)
        self.assertIn("not in patches: Python/ceval.c", out)
        rc, out = self.patches("refresh")
        self.assertEqual(rc, 0, out)
        self.assertIn("removed: pycds-patches/Python/ceval.c.patch", out)
        self.assertFalse(os.path.exists(self.path("pycds-patches/Python")))
        rc, out = self.patches("check")
        self.assertEqual(rc, 0, out)
        self.assertIn("clean (0 patched files)", out)
        self.assertIn("0 written", self.bootstrap())

    def test_refresh_reports_deleted_upstream_file(self):
        os.remove(self.path("Lib/os.py"))
        rc, out = self.patches("refresh")
        self.assertNotEqual(rc, 0)
        self.assertIn("Lib/os.py", out)
        rc, out = self.patches("check")
        self.assertNotEqual(rc, 0)
        self.assertIn("missing upstream file: Lib/os.py", out)


def _real_tarball():
    """The real upstream tarball if it is available locally, else None."""
    path = os.environ.get("PYCDS_UPSTREAM_TARBALL")
    if not path:
        cache = (os.environ.get("XDG_CACHE_HOME")
                 or os.path.join(os.path.expanduser("~"), ".cache"))
        path = os.path.join(cache, "pycds", REAL_TARBALL)
    return path if os.path.isfile(path) else None


@unittest.skipIf(SKIP_REASON, SKIP_REASON)
@unittest.skipUnless(_real_tarball(), "upstream tarball not cached locally")
class RealUpstreamTests(ToolTestBase):
    """Lay the real CPython tarball with this tree's pycds-patches/."""

    def test_real_patches_apply_cleanly(self):
        repo = self.make_repo("real", {})
        src_patches = os.path.join(SRC_ROOT, "pycds-patches")
        if os.path.isdir(src_patches):
            shutil.copytree(src_patches, self.path("pycds-patches", repo))
        env = dict(self.env, PYCDS_UPSTREAM_TARBALL=_real_tarball())
        del env["PYCDS_UPSTREAM_SHA256"]
        self.bootstrap(repo=repo, env=env)
        rc, out = self.patches("check", repo=repo)
        self.assertEqual(rc, 0, out)
        self.assertIn("0 written", self.bootstrap(repo=repo, env=env))


if __name__ == "__main__":
    unittest.main()
