/* pycds: AUTO -- share mode that keeps its application archive current.
 *
 * -X cds=auto -X cds_archive=PATH runs as share mode and also traces the
 * modules the program imports (cds_trace.c).  At exit, if the archive
 * could not be used or this run imported source modules no archive served
 * (new modules, moved ones, stale entries after an upgrade), the run's
 * modules are merged into the archive's module list (PATH.lst, unless
 * -X cds_list names one) and a dump child rewrites the archive from it.
 * A run that every archive served does nothing more than share mode.
 *
 * Concurrency: the list's lock is taken without waiting; a process that
 * finds it held leaves the refresh to the holder.  A process that started
 * before the archive was refreshed by another, and has nothing new to add,
 * does not dump again.  The dump writes a temporary file and renames it
 * over the archive (cds_fileio.c), so processes mapping the old archive
 * are undisturbed and no partial file is ever seen under PATH.
 *
 * Errors: none reach the program (exit status, output and atexit are
 * unchanged); a refresh that fails is one line under -X cds_verbose.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_fileutils.h"     // _Py_EncodeLocaleRaw()
#include "pycore_pystate.h"       // _Py_GetConfig()
#include "cds_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* When this process started (CLOCK_REALTIME, as file times are). */
static struct timespec started;

void
_PyCDS_AutoStart(void)
{
    clock_gettime(CLOCK_REALTIME, &started);
}

static double
seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Whether the archive was replaced after this process started. */
static int
replaced_since_start(const char *archive)
{
    struct stat st;
    if (stat(archive, &st) < 0) {
        return 0;
    }
    return st.st_mtim.tv_sec > started.tv_sec
           || (st.st_mtim.tv_sec == started.tv_sec
               && st.st_mtim.tv_nsec > started.tv_nsec);
}

/* The environment of the dump: this one without the archive settings
   (the dump takes its own from -X options).  NULL if out of memory. */
static char **
dump_environ(void)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **env = PyMem_RawCalloc(n + 1, sizeof(char *));
    if (env == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "PYTHONCDS", 9) != 0
            && strncmp(environ[i], "PYCDS", 5) != 0)
        {
            env[k++] = environ[i];
        }
    }
    return env;
}

/* Run the dump child and wait for it; its exit status, or -1 (logged). */
static int
run_dump(const _PyCDS_Settings *s, const char *list)
{
    const PyConfig *config = _Py_GetConfig();
    char *exe = config->executable && config->executable[0]
                ? _Py_EncodeLocaleRaw(config->executable, NULL) : NULL;
    char *list_arg = _PyCDS_Concat("cds_list", "=", list);
    char *archive_arg = _PyCDS_Concat("cds_archive", "=", s->archive_path);
    char *base_arg = s->base_none ? _PyCDS_Concat("cds_base", "=", "none")
                     : s->base_path ? _PyCDS_Concat("cds_base", "=",
                                                    s->base_path)
                     : NULL;
    char **env = dump_environ();
    int status = -1;
    if (exe == NULL || list_arg == NULL || archive_arg == NULL || env == NULL
        || (base_arg == NULL && (s->base_none || s->base_path)))
    {
        _PyCDS_Log(1, "auto: cannot run the dump: %s",
                   exe == NULL ? "no executable" : "out of memory");
        goto done;
    }
    /* the same -O level (the archive records it) and search path flags */
    const char *argv[24];
    int argc = 0;
    argv[argc++] = exe;
    for (int i = 0; i < config->optimization_level && i < 2; i++) {
        argv[argc++] = "-O";
    }
    if (!config->use_environment) {
        argv[argc++] = "-E";
    }
    if (!config->user_site_directory) {
        argv[argc++] = "-s";
    }
    if (!config->site_import) {
        argv[argc++] = "-S";
    }
    argv[argc++] = "-X";
    argv[argc++] = "cds=dump";
    argv[argc++] = "-X";
    argv[argc++] = list_arg;
    argv[argc++] = "-X";
    argv[argc++] = archive_arg;
    if (base_arg != NULL) {
        argv[argc++] = "-X";
        argv[argc++] = base_arg;
    }
    argv[argc] = NULL;

    /* the program's output stays its own: the dump's goes to /dev/null
       (its summary line to stderr under -X cds_verbose) */
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    if (s->verbose < 1) {
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null",
                                         O_WRONLY, 0);
    }
    pid_t pid;
    int err = posix_spawn(&pid, exe, &actions, NULL, (char *const *)argv,
                          env);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
        _PyCDS_Log(1, "auto: cannot run the dump (%s): %s", exe,
                   strerror(err));
        goto done;
    }
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0) {
        if (errno != EINTR) {
            _PyCDS_Log(1, "auto: lost the dump: %s", strerror(errno));
            goto done;
        }
    }
    status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus)
                                : 128 + WTERMSIG(wstatus);
done:
    PyMem_RawFree(exe);
    PyMem_RawFree(list_arg);
    PyMem_RawFree(archive_arg);
    PyMem_RawFree(base_arg);
    PyMem_RawFree(env);
    return status;
}

void
_PyCDS_AutoFini(const _PyCDS_Settings *s)
{
    _PyCDS_ShareStats st;
    _PyCDS_GetShareStats(&st);
    const _PyCDS_ArchiveStats *app = &st.archive[0];
    if (app->active && st.missed_source == 0 && st.stale == 0) {
        _PyCDS_TraceClear();    /* served throughout: nothing to do */
        return;
    }
    int busy;
    Py_ssize_t added = -1;
    int lockfd = _PyCDS_TraceMergeLocked(s->list_path, &busy, &added);
    if (lockfd < 0) {
        if (busy) {
            _PyCDS_Log(1, "auto: another process is refreshing '%s'",
                       s->archive_path);
        }
        return;
    }
    if (added < 0) {
        goto done;              /* logged */
    }
    if (added == 0 && replaced_since_start(s->archive_path)) {
        _PyCDS_Log(1, "auto: '%s' was refreshed by another process",
                   s->archive_path);
        goto done;
    }
    if (app->active && added == 0 && st.stale == 0) {
        /* what was missed is listed already: modules the dump could not
           archive; dumping again would not serve them */
        _PyCDS_Log(1, "auto: '%s' is current (%zd modules not archivable)",
                   s->archive_path, st.missed_source);
        goto done;
    }
    char why[200];
    if (!app->active) {
        snprintf(why, sizeof(why), "it was not used: %s",
                 app->reason ? app->reason : "unknown");
    }
    else {
        snprintf(why, sizeof(why), "%zd new modules, %zd stale", added,
                 st.stale);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = run_dump(s, s->list_path);
    if (status == 0) {
        _PyCDS_Log(1, "auto: '%s' refreshed in %.2f s (%s)", s->archive_path,
                   seconds_since(&t0), why);
    }
    else if (status > 0) {
        _PyCDS_Log(1, "auto: '%s' not refreshed: the dump exited with "
                   "status %d (%s)", s->archive_path, status, why);
    }
done:
    _PyCDS_TraceUnlock(lockfd);
}
