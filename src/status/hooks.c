/* hooks.c: event hooks (hooks.h). */
#include "pgshift/hooks.h"

#include "pgshift/log.h"

#include <errno.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *hook_command(const pgs_plan *plan, const char *event)
{
    const pgs_plan_hooks *h = &plan->hooks;
    if (strcmp(event, "copy_done") == 0)
        return h->copy_done;
    if (strcmp(event, "ready") == 0)
        return h->ready;
    if (strcmp(event, "cutover_started") == 0)
        return h->cutover_started;
    if (strcmp(event, "cutover_done") == 0)
        return h->cutover_done;
    if (strcmp(event, "failed") == 0)
        return h->failed;
    if (strcmp(event, "blocked") == 0)
        return h->blocked;
    return NULL;
}

void hooks_fire(const pgs_plan *plan, const char *event, const char *json)
{
    const char *cmd = hook_command(plan, event);
    if (cmd == NULL)
        return;
    /* stdin from an unlinked temporary file: the hook may read it at its
     * own pace, after pgshift has moved on or even exited. */
    char path[] = "/tmp/pgshift-hook-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        log_warn("hook %s not run: temporary file: %s", event, strerror(errno));
        return;
    }
    unlink(path);
    size_t len = json ? strlen(json) : 0;
    bool ok = write(fd, json ? json : "", len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
              lseek(fd, 0, SEEK_SET) == 0;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof(char *));
    char *ev = NULL, *mg = NULL;
    if (env == NULL || asprintf(&ev, "PGSHIFT_EVENT=%s", event) < 0 ||
        asprintf(&mg, "PGSHIFT_MIGRATION=%s", plan->name) < 0)
        ok = false;
    size_t k = 0;
    for (size_t i = 0; ok && i < n; i++)
        if (strncmp(environ[i], "PGSHIFT_EVENT=", 14) != 0 &&
            strncmp(environ[i], "PGSHIFT_MIGRATION=", 18) != 0 &&
            strncmp(environ[i], "PGPASSWORD=", 11) != 0)
            env[k++] = environ[i];
    if (ok) {
        env[k++] = ev;
        env[k++] = mg;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd, STDIN_FILENO);
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    pid_t pid = 0;
    int rc = ok ? posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    close(fd);
    free(env);
    free(ev);
    free(mg);
    if (rc != 0)
        log_warn("hook %s not run: %s", event, strerror(rc));
    else
        log_info("hook %s started (pid %d)", event, (int)pid);
}

void hooks_reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            log_warn("hook (pid %d) exited with %d", (int)pid, WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            log_warn("hook (pid %d) killed by signal %d", (int)pid, WTERMSIG(status));
    }
}
