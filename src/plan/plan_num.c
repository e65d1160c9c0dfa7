/* plan_num.c: whole numbers, sizes ("8MB") and durations ("500ms") as the
 * plan writes them, 1024-based and case-insensitive as in postgresql.conf. */
#include "plan_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>

typedef struct unit {
    const char *name;
    uint64_t factor;
} unit;

static const unit size_units[] = {
    {"B", 1},
    {"kB", UINT64_C(1) << 10},
    {"MB", UINT64_C(1) << 20},
    {"GB", UINT64_C(1) << 30},
    {"TB", UINT64_C(1) << 40},
    {NULL, 0},
};

static const unit duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"min", 60 * 1000}, {"h", 60 * 60 * 1000}, {"d", 24 * 60 * 60 * 1000},
    {NULL, 0},
};

/* "<digits>[ ]<unit>" or "<digits>" (in the plain unit), unit names
 * case-insensitive. */
static num_result number_with_unit(const char *text, const unit *units, uint64_t *out)
{
    const char *p = text;
    uint64_t v = 0, factor = 1;
    bool over = false;

    if (!p || !isdigit((unsigned char)*p))
        return NUM_SYNTAX;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            over = true;
        else
            v = v * 10 + d;
    }
    if (*p == ' ' && p[1] == '\0')
        return NUM_SYNTAX;
    if (*p == ' ')
        p++;
    if (*p) {
        const unit *u = units;
        while (u->name && strcasecmp(p, u->name) != 0)
            u++;
        if (!u->name)
            return NUM_SYNTAX;
        factor = u->factor;
    }
    if (over || v > UINT64_MAX / factor)
        return NUM_RANGE;
    *out = v * factor;
    return NUM_OK;
}

num_result plan_size_parse(const char *text, uint64_t *out)
{
    return number_with_unit(text, size_units, out);
}

num_result plan_duration_parse(const char *text, int *out)
{
    uint64_t v;
    num_result r = number_with_unit(text, duration_units, &v);
    if (r != NUM_OK)
        return r;
    if (v > INT_MAX)
        return NUM_RANGE;
    *out = (int)v;
    return NUM_OK;
}

bool pgs_parse_size(const char *text, uint64_t *out)
{
    uint64_t v;
    if (plan_size_parse(text, &v) != NUM_OK)
        return false;
    *out = v;
    return true;
}

bool pgs_parse_duration_ms(const char *text, int *out)
{
    int v;
    if (plan_duration_parse(text, &v) != NUM_OK)
        return false;
    *out = v;
    return true;
}

/* A whole number in decimal, optionally negative. */
num_result plan_int_parse(const char *text, int64_t *out)
{
    const char *p = text;
    bool neg = *p == '-';
    uint64_t v = 0;

    if (neg)
        p++;
    if (!isdigit((unsigned char)*p))
        return NUM_SYNTAX;
    bool over = false;
    for (; isdigit((unsigned char)*p); p++) {
        if (v > ((uint64_t)INT64_MAX - (unsigned)(*p - '0')) / 10)
            over = true;
        else
            v = v * 10 + (unsigned)(*p - '0');
    }
    if (*p)
        return NUM_SYNTAX;
    if (over)
        return NUM_RANGE;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return NUM_OK;
}

/* 60000 -> "60s", 1 -> "1ms", 7200000 -> "2h". */
const char *plan_duration_text(char *buf, size_t n, int64_t ms)
{
    if (ms % 1000 == 0 && ms != 0 && ms <= 60000)
        snprintf(buf, n, "%" PRId64 "s", ms / 1000);
    else if (ms % 3600000 == 0 && ms != 0)
        snprintf(buf, n, "%" PRId64 "h", ms / 3600000);
    else if (ms % 60000 == 0 && ms != 0)
        snprintf(buf, n, "%" PRId64 "min", ms / 60000);
    else if (ms % 1000 == 0 && ms != 0)
        snprintf(buf, n, "%" PRId64 "s", ms / 1000);
    else
        snprintf(buf, n, "%" PRId64 "ms", ms);
    return buf;
}
