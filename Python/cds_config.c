/* pycds: the -X cds* options and PYTHONCDS* environment variables.
 *
 * The settings live in a process-wide structure rather than in PyConfig so
 * that PyConfig's layout (part of the embedding API) stays that of stock
 * CPython.  They are read during PyConfig_Read(), so that an invalid value
 * stops start-up the same way as other invalid options do.  Every
 * -X cds* option and PYTHONCDS* variable is read here and nowhere else.
 *
 * Errors: an invalid value is a PyStatus error naming the option (start-up
 * stops with exit status 1); logging never fails.
 */

#include "Python.h"
#include "pycore_cds.h"
#include "pycore_fileutils.h"     // _Py_EncodeLocaleRaw()
#include "pycore_initconfig.h"    // _PyStatus_ERR()

#include <stdarg.h>
#include <stddef.h>               // offsetof()
#include <strings.h>              // strcasecmp()
#include <unistd.h>               // getcwd()

/* Without an option or variable, share mode with the installation's
   default archive (cds_share.c finds it; none there: normal imports). */
#define DEFAULT_SETTINGS {.mode = _PyCDS_SHARE, .mode_source = "default"}

static _PyCDS_Settings cds_settings = DEFAULT_SETTINGS;

const _PyCDS_Settings *
_PyCDS_GetSettings(void)
{
    return &cds_settings;
}

const char *
_PyCDS_ModeName(_PyCDS_Mode mode)
{
    switch (mode) {
        case _PyCDS_TRACE: return "trace";
        case _PyCDS_DUMP: return "dump";
        case _PyCDS_SHARE: return "share";
        default: return "off";
    }
}

void
_PyCDS_Log(int level, const char *fmt, ...)
{
    if (cds_settings.verbose < level) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fputs("cds: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
}

static const wchar_t *
get_xoption(const PyConfig *config, const wchar_t *name, int *present)
{
    /* Like config_get_xoption_value(): the last occurrence wins.
       "-X name" without "=" gives an empty value. */
    size_t len = wcslen(name);
    const wchar_t *value = NULL;
    *present = 0;
    for (Py_ssize_t i = 0; i < config->xoptions.length; i++) {
        const wchar_t *opt = config->xoptions.items[i];
        if (wcsncmp(opt, name, len) != 0) {
            continue;
        }
        if (opt[len] == L'\0') {
            value = L"";
            *present = 1;
        }
        else if (opt[len] == L'=') {
            value = opt + len + 1;
            *present = 1;
        }
    }
    return value;
}

static const char *
get_env(const PyConfig *config, const char *name)
{
    if (name == NULL || !config->use_environment) {
        return NULL;
    }
    const char *value = getenv(name);
    return (value != NULL && value[0] != '\0') ? value : NULL;
}

/* "auto" is share mode keeping its archive current (cds_auto.c) */
static int
parse_mode(const char *value, int ignore_case, _PyCDS_Settings *s)
{
    static const char *names[] = {"off", "trace", "dump", "share", "auto"};
    for (int i = 0; i < 5; i++) {
        if (ignore_case ? strcasecmp(value, names[i]) == 0
                        : strcmp(value, names[i]) == 0) {
            s->mode = i == 4 ? _PyCDS_SHARE : (_PyCDS_Mode)i;
            s->auto_refresh = (i == 4);
            return 0;
        }
    }
    return -1;
}

static int
parse_level(const char *value, int *level)
{
    if (value[0] == '\0') {
        *level = 1;
        return 0;
    }
    char *end;
    long n = strtol(value, &end, 10);
    if (*end != '\0' || n < 0 || n > 100) {
        return -1;
    }
    *level = (int)n;
    return 0;
}

/* a + b + c in a new string from the raw allocator; NULL if out of
   memory.  (Also for the files that build paths and arguments late in
   finalization.) */
char *
_PyCDS_Concat(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *result = PyMem_RawMalloc(n);
    if (result != NULL) {
        snprintf(result, n, "%s%s%s", a, b, c);
    }
    return result;
}

/* Make 'path' absolute against the current directory, so that a later
   chdir() by the program does not change which file is used. */
static char *
absolute_path(const char *path)
{
    if (path[0] == '/') {
        return _PyCDS_Concat(path, "", "");
    }
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        strcpy(cwd, ".");
    }
    return _PyCDS_Concat(cwd, "/", path);
}

/* Read a path option: -X NAME=PATH, then each environment variable. */
static PyStatus
read_path(const PyConfig *config, const wchar_t *xname, const char *env1,
          const char *env2, char **result)
{
    int present;
    const wchar_t *xvalue = get_xoption(config, xname, &present);
    char *raw = NULL;
    if (present) {
        if (xvalue[0] == L'\0') {
            /* a PyStatus message must outlive the call */
            static char msg[96];
            snprintf(msg, sizeof(msg), "option -X %ls requires a path "
                     "(-X %ls=PATH)", xname, xname);
            return _PyStatus_ERR(msg);
        }
        raw = _Py_EncodeLocaleRaw(xvalue, NULL);
        if (raw == NULL) {
            return _PyStatus_NO_MEMORY();
        }
    }
    else {
        const char *env = get_env(config, env1);
        if (env == NULL) {
            env = get_env(config, env2);
        }
        if (env == NULL) {
            *result = NULL;
            return _PyStatus_OK();
        }
        raw = PyMem_RawMalloc(strlen(env) + 1);
        if (raw == NULL) {
            return _PyStatus_NO_MEMORY();
        }
        strcpy(raw, env);
    }
    *result = absolute_path(raw);
    PyMem_RawFree(raw);
    if (*result == NULL) {
        return _PyStatus_NO_MEMORY();
    }
    return _PyStatus_OK();
}

/* A boolean -X option: "-X NAME" or "-X NAME=1" sets *flag, "-X NAME=0"
   clears it; else an error naming the option.  Without the option,
   'env' (if not NULL) set and not empty sets *flag. */
static PyStatus
read_flag(const PyConfig *config, const wchar_t *xname, const char *env,
          int *flag, const char *error)
{
    int present;
    const wchar_t *value = get_xoption(config, xname, &present);
    if (present) {
        if (wcscmp(value, L"") == 0 || wcscmp(value, L"1") == 0) {
            *flag = 1;
        }
        else if (wcscmp(value, L"0") == 0) {
            *flag = 0;
        }
        else {
            return PyStatus_Error(error);
        }
    }
    else if (env != NULL && get_env(config, env) != NULL) {
        *flag = 1;
    }
    return _PyStatus_OK();
}

/* The mode: -X cds wins over PYTHONCDS, which wins over PYCDSMODE */
static PyStatus
read_mode(const PyConfig *config, _PyCDS_Settings *s)
{
    int present;
    const wchar_t *xmode = get_xoption(config, L"cds", &present);
    if (present) {
        if (xmode[0] == L'\0') {
            s->mode = _PyCDS_SHARE;   /* "-X cds" alone turns sharing on */
        }
        else {
            char *value = _Py_EncodeLocaleRaw(xmode, NULL);
            if (value == NULL) {
                return _PyStatus_NO_MEMORY();
            }
            int err = parse_mode(value, 0, s);
            PyMem_RawFree(value);
            if (err < 0) {
                return PyStatus_Error("bad value for option -X cds (expected "
                                     "\"off\", \"trace\", \"dump\", "
                                     "\"share\" or \"auto\")");
            }
        }
        s->mode_source = "-X cds";
    }
    else if (get_env(config, "PYTHONCDS") != NULL) {
        /* in any case, as people type environment values */
        if (parse_mode(get_env(config, "PYTHONCDS"), 1, s) < 0) {
            return PyStatus_Error("bad value for PYTHONCDS (expected \"off\", "
                                 "\"trace\", \"dump\", \"share\" or "
                                 "\"auto\", in any case)");
        }
        s->mode_source = "PYTHONCDS";
    }
    else if (get_env(config, "PYCDSMODE") != NULL) {
        if (parse_mode(get_env(config, "PYCDSMODE"), 1, s) < 0
            || s->auto_refresh)
        {
            return PyStatus_Error("bad value for PYCDSMODE (expected TRACE, "
                                 "DUMP, SHARE or OFF)");
        }
        s->mode_source = "PYCDSMODE";
    }
    return _PyStatus_OK();
}

/* -X cds_verbose, PYTHONCDSVERBOSE, PYCDSVERBOSE */
static PyStatus
read_verbose(const PyConfig *config, _PyCDS_Settings *s)
{
    int present;
    const wchar_t *xverbose = get_xoption(config, L"cds_verbose", &present);
    if (present) {
        char *value = _Py_EncodeLocaleRaw(xverbose, NULL);
        if (value == NULL) {
            return _PyStatus_NO_MEMORY();
        }
        int err = parse_level(value, &s->verbose);
        PyMem_RawFree(value);
        if (err < 0) {
            return PyStatus_Error("bad value for option -X cds_verbose "
                                 "(expected an integer from 0 to 100)");
        }
    }
    else {
        const char *env = get_env(config, "PYTHONCDSVERBOSE");
        const char *name = "PYTHONCDSVERBOSE";
        if (env == NULL) {
            env = get_env(config, "PYCDSVERBOSE");
            name = "PYCDSVERBOSE";
        }
        if (env != NULL && parse_level(env, &s->verbose) < 0) {
            return (strcmp(name, "PYTHONCDSVERBOSE") == 0)
                ? PyStatus_Error("bad value for PYTHONCDSVERBOSE (expected "
                                "an integer from 0 to 100)")
                : PyStatus_Error("bad value for PYCDSVERBOSE (expected "
                                "an integer from 0 to 100)");
        }
    }
    return _PyStatus_OK();
}

/* The base archive: -X cds_base=PATH|none, PYTHONCDSBASE.  Not set: the
   installation's default archive, unaffected by -E and -I (it belongs to
   the installation, like the .pyc files of the standard library). */
static PyStatus
read_base(const PyConfig *config, _PyCDS_Settings *s)
{
    int present;
    const wchar_t *x = get_xoption(config, L"cds_base", &present);
    const char *env = get_env(config, "PYTHONCDSBASE");
    if ((present && wcscmp(x, L"none") == 0)
        || (!present && env != NULL && strcasecmp(env, "none") == 0))
    {
        s->base_none = 1;
        return _PyStatus_OK();
    }
    return read_path(config, L"cds_base", "PYTHONCDSBASE", NULL,
                     &s->base_path);
}

static void
free_paths(_PyCDS_Settings *s)
{
    PyMem_RawFree(s->list_path);
    PyMem_RawFree(s->archive_path);
    PyMem_RawFree(s->base_path);
    PyMem_RawFree(s->dump_strip);
    PyMem_RawFree(s->stats_path);
    s->list_path = s->archive_path = s->base_path = NULL;
    s->dump_strip = s->stats_path = NULL;
}

PyStatus
_PyCDS_ReadConfig(const PyConfig *config)
{
    /* a PyStatus message must outlive the call */
    static char missing_msg[128];
    _PyCDS_Settings s = DEFAULT_SETTINGS;

#define EXPECTED " (expected nothing, \"0\" or \"1\")"
    static const struct {
        const wchar_t *xname;
        const char *env;
        size_t field;
        const char *error;
    } flags[] = {
        /* testing aid: force the relocation path of SHARE */
        {L"cds_relocate", NULL, offsetof(_PyCDS_Settings, force_relocation),
         "bad value for option -X cds_relocate" EXPECTED},
        /* write-protect the archive's never-written parts (checking) */
        {L"cds_protect", "PYTHONCDSPROTECT",
         offsetof(_PyCDS_Settings, protect),
         "bad value for option -X cds_protect" EXPECTED},
        /* also check that archived values are in canonical form */
        {L"cds_verify", "PYTHONCDSVERIFY", offsetof(_PyCDS_Settings, verify),
         "bad value for option -X cds_verify" EXPECTED},
        /* check the source hash of every entry (normalized mtimes) */
        {L"cds_check_source", "PYTHONCDSCHECKSOURCE",
         offsetof(_PyCDS_Settings, check_source),
         "bad value for option -X cds_check_source" EXPECTED},
        /* an archive that cannot be used stops start-up */
        {L"cds_strict", "PYTHONCDSSTRICT", offsetof(_PyCDS_Settings, strict),
         "bad value for option -X cds_strict" EXPECTED},
        /* testing aid: relocate in place where SHARE would copy */
        {L"cds_in_place", NULL, offsetof(_PyCDS_Settings, in_place),
         "bad value for option -X cds_in_place" EXPECTED},
    };
#undef EXPECTED
    PyStatus status;
    for (size_t i = 0; i < Py_ARRAY_LENGTH(flags); i++) {
        status = read_flag(config, flags[i].xname, flags[i].env,
                           (int *)((char *)&s + flags[i].field),
                           flags[i].error);
        if (_PyStatus_EXCEPTION(status)) {
            return status;
        }
    }
    status = read_mode(config, &s);
    if (_PyStatus_EXCEPTION(status)) {
        return status;
    }
    status = read_verbose(config, &s);
    if (_PyStatus_EXCEPTION(status)) {
        return status;
    }
    status = read_path(config, L"cds_list", "PYTHONCDSLIST",
                       "PYCDSLIST", &s.list_path);
    if (_PyStatus_EXCEPTION(status)) {
        return status;
    }
    status = read_path(config, L"cds_archive", "PYTHONCDSARCHIVE",
                       "PYCDSARCHIVE", &s.archive_path);
    if (_PyStatus_EXCEPTION(status)) {
        goto error;
    }
    status = read_base(config, &s);
    if (_PyStatus_EXCEPTION(status)) {
        goto error;
    }
    status = read_path(config, L"cds_dump_strip", NULL, NULL,
                       &s.dump_strip);
    if (_PyStatus_EXCEPTION(status)) {
        goto error;
    }

    /* No defaults: a list or an archive in the working directory may be
       anyone's (a shared /tmp), and stock CPython reads nothing there. */
    const char *mode = _PyCDS_ModeName(s.mode);
    const char *missing = NULL;
    if ((s.mode == _PyCDS_TRACE || s.mode == _PyCDS_DUMP)
        && s.list_path == NULL)
    {
        missing = "a module list (-X cds_list=PATH or PYTHONCDSLIST)";
    }
    else if ((s.mode == _PyCDS_DUMP || s.auto_refresh)
             && s.archive_path == NULL)
    {
        missing = "an archive path (-X cds_archive=PATH or "
                  "PYTHONCDSARCHIVE)";
    }
    if (missing != NULL) {
        snprintf(missing_msg, sizeof(missing_msg), "-X cds=%s needs %s",
                 s.auto_refresh ? "auto" : mode, missing);
        status = _PyStatus_ERR(missing_msg);
        goto error;
    }

    if (s.auto_refresh && s.list_path == NULL    /* AUTO's: PATH.lst */
        && !(s.list_path = _PyCDS_Concat(s.archive_path, ".lst", ""))) {
        status = _PyStatus_NO_MEMORY();
        goto error;
    }

    /* SHARE appends its counters to this file at exit */
    const char *stats = get_env(config, "PYTHONCDSSTATS");
    if (stats != NULL) {
        s.stats_path = absolute_path(stats);
        if (s.stats_path == NULL) {
            status = _PyStatus_NO_MEMORY();
            goto error;
        }
    }

    /* The configuration may be read more than once: keep the latest. */
    free_paths(&cds_settings);
    cds_settings = s;
    return _PyStatus_OK();

error:
    free_paths(&s);
    return status;
}
