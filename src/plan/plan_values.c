/* plan_values.c: the single-value keys: the plan name, connection strings,
 * text, booleans, whole numbers, sizes and durations, each checked with a
 * message that says how to fix it. */
#include "plan_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#define PLAN_NAME_MAX 40 /* leaves room in the 63-byte slot name */

bool plan_fill_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
{
    char q[QUOTE_LEN], fix[PLAN_NAME_MAX + 1];
    size_t len = strlen(s), o = 0;
    bool ok = len > 0 && len <= PLAN_NAME_MAX;

    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || isdigit((unsigned char)*p) || *p == '_'))
            ok = false;
    if (ok) {
        *dst = strdup(s);
        return *dst ? true : plan_oom(c);
    }
    if (len == 0)
        return plan_fail(c, v->line, kp, "is empty; use e.g. \"petri\" (a-z, 0-9 and _)");
    if (len > PLAN_NAME_MAX)
        return plan_fail(c, v->line, kp, "%s is %zu characters long; use at most %d",
                         plan_quoted(q, sizeof q, s), len, PLAN_NAME_MAX);
    for (const char *p = s; *p && o < PLAN_NAME_MAX; p++)
        fix[o++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    fix[o] = '\0';
    return plan_fail(c, v->line, kp, "%s may only contain a-z, 0-9 and _; use e.g. \"%s\"",
                     plan_quoted(q, sizeof q, s), fix);
}

/* The value may hold a password: say what is wrong, never show it. */
bool plan_fill_conninfo(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
{
    char *msg = NULL;
    PQconninfoOption *opts;

    if (!*s)
        return plan_fail(c, v->line, kp,
                         "is empty; use e.g. \"host=db1 dbname=app\" or "
                         "\"postgresql://user@db1/app\"");
    opts = PQconninfoParse(s, &msg);
    if (!opts) {
        bool oom = msg == NULL;
        PQfreemem(msg);
        if (oom)
            return plan_oom(c);
        return plan_fail(c, v->line, kp,
                         "is not a valid libpq connection string (not shown: it may hold a "
                         "password); use key=value pairs like \"host=db1 dbname=app\", quoting "
                         "values with spaces as 'a b', or a postgresql:// URI");
    }
    PQconninfoFree(opts);
    *dst = strdup(s);
    return *dst ? true : plan_oom(c);
}

bool plan_fill_bool(plan_ctx *c, const ynode *v, const char *kp, const char *s, bool *dst)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    char q[QUOTE_LEN];

    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i])) {
            *dst = true;
            return true;
        }
        if (!strcasecmp(s, no[i])) {
            *dst = false;
            return true;
        }
    }
    return plan_fail(c, v->line, kp, "%s is not a boolean; use true or false",
                     plan_quoted(q, sizeof q, s));
}

bool plan_fill_int(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                   int *dst)
{
    char q[QUOTE_LEN];
    int64_t n;

    switch (plan_int_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp, "%s is not a whole number; use e.g. %s",
                         plan_quoted(q, sizeof q, s), f->example);
    case NUM_RANGE:
        n = s[0] == '-' ? INT64_MIN : INT64_MAX;
        break;
    case NUM_OK:
        break;
    }
    if (n < f->min || n > f->max) {
        if (f->max == INT_MAX)
            return plan_fail(c, v->line, kp,
                             "%s is out of range; use a number from %" PRId64 " to %d",
                             plan_quoted(q, sizeof q, s), f->min, INT_MAX);
        return plan_fail(c, v->line, kp,
                         "%s is out of range; use a number from %" PRId64 " to %" PRId64,
                         plan_quoted(q, sizeof q, s), f->min, f->max);
    }
    *dst = (int)n;
    return true;
}

bool plan_fill_size(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                    uint64_t *dst)
{
    char q[QUOTE_LEN];
    uint64_t n;

    switch (plan_size_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp,
                         "%s is not a size; use a whole number with a unit B, kB, MB, GB or TB, "
                         "e.g. %s",
                         plan_quoted(q, sizeof q, s), f->example);
    case NUM_RANGE:
        return plan_fail(c, v->line, kp, "%s is too large; use e.g. %s",
                         plan_quoted(q, sizeof q, s), f->example);
    case NUM_OK:
        break;
    }
    if (n < (uint64_t)f->min)
        return plan_fail(c, v->line, kp, "%s is too small; use at least %" PRId64 "B, e.g. %s",
                         plan_quoted(q, sizeof q, s), f->min, f->example);
    *dst = n;
    return true;
}

bool plan_fill_duration(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                        const char *s, int *dst)
{
    char q[QUOTE_LEN], lo[32], hi[32];
    int n = 0;

    switch (plan_duration_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp,
                         "%s is not a duration; use a whole number with a unit ms, s, min, h or d, "
                         "e.g. %s",
                         plan_quoted(q, sizeof q, s), f->example);
    case NUM_RANGE:
        n = INT_MAX;
        if (f->max == INT_MAX)
            return plan_fail(c, v->line, kp, "%s is too large; use e.g. %s",
                             plan_quoted(q, sizeof q, s), f->example);
        break;
    case NUM_OK:
        break;
    }
    if (n < f->min || n > f->max) {
        if (f->max == INT_MAX)
            return plan_fail(c, v->line, kp, "%s is out of range; use at least %s, e.g. %s",
                             plan_quoted(q, sizeof q, s), plan_duration_text(lo, sizeof lo, f->min),
                             f->example);
        return plan_fail(c, v->line, kp, "%s is out of range; use a duration from %s to %s",
                         plan_quoted(q, sizeof q, s), plan_duration_text(lo, sizeof lo, f->min),
                         plan_duration_text(hi, sizeof hi, f->max));
    }
    *dst = n;
    return true;
}

bool plan_fill_text(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f, const char *s,
                    char **dst)
{
    if (!*s)
        return plan_fail(c, v->line, kp, "is empty; use e.g. \"%s: %s\" or remove the key", f->key,
                         f->example);
    /* An example of words joined by '|' lists the only values allowed. */
    if (strchr(f->example, '|')) {
        size_t n = strlen(s);
        const char *w = f->example;
        bool found = false;
        while (!found && w) {
            const char *e = strchr(w, '|');
            size_t len = e ? (size_t)(e - w) : strlen(w);
            found = len == n && strncmp(w, s, n) == 0;
            w = e ? e + 1 : NULL;
        }
        if (!found)
            return plan_fail(c, v->line, kp, "\"%s\" is not one of %s", s, f->example);
    }
    *dst = strdup(s);
    return *dst ? true : plan_oom(c);
}
