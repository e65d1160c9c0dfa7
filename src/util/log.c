/* log.c: stderr logging with levels, timestamps and an optional JSON form. */
#include "pgshift/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pgs_log_level min_level = PGS_LOG_INFO;
static bool as_json = false;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void pgs_log_set_level(pgs_log_level level)
{
    min_level = level;
}

void pgs_log_set_json(bool json)
{
    as_json = json;
}

bool pgs_log_parse_level(const char *s, pgs_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (pgs_log_level)i;
            return true;
        }
    }
    return false;
}

void pgs_log(pgs_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

    pthread_mutex_lock(&log_lock);
    if (as_json) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "ts", when, "level", level_names[level], "msg", msg);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        fprintf(stderr, "%s\n", line ? line : msg);
        free(line);
        json_decref(o);
    } else {
        fprintf(stderr, "%s %-5s %s\n", when, level_names[level], msg);
    }
    pthread_mutex_unlock(&log_lock);
}
