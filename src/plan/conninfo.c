/* conninfo.c: connection strings made safe to print. libpq parses the
 * string (PQconninfoParse, the parser it connects with), and the result is
 * printed again from the parsed options, with every option libpq marks
 * secret (dispchar "*": password, sslpassword, ...) shown as ********.
 * Anything libpq rejects is not shown at all: it may be a password that was
 * not quoted or percent-encoded. */
#include "pgshift/plan.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define REDACTED         "********"
#define REDACT_MAX_DEPTH 3
#define UNPARSEABLE      "(unparseable conninfo)"

/* libpq's own test (recognized_connection_string): a URI, or a string with
 * "=" in it, which PQconnectdbParams expands when it is the dbname. */
static size_t uri_prefix_len(const char *s)
{
    if (!strncmp(s, "postgresql://", 13))
        return 13;
    if (!strncmp(s, "postgres://", 11))
        return 11;
    return 0;
}

static bool looks_like_conninfo(const char *s)
{
    return uri_prefix_len(s) > 0 || strchr(s, '=') != NULL;
}

/* A URI whose user info was not percent-encoded: libpq takes the user info
 * up to the first "@", looking no further than the first "/", so a raw "@"
 * or "/" in a password sends its tail into the host, port or database name.
 * True when an "@" is left between where libpq's user info ends (or the
 * start, if it found none) and the query string. */
static bool uri_userinfo_spilled(const char *s)
{
    size_t plen = uri_prefix_len(s);
    if (plen == 0)
        return false;
    const char *rest = s + plen;
    const char *q = rest + strcspn(rest, "@/");
    if (*q == '@')
        rest = q + 1;
    return memchr(rest, '@', strcspn(rest, "?")) != NULL;
}

/* The options libpq reads from s, or NULL if it would refuse s (or s would
 * show part of a password in another option). Free with PQconninfoFree. */
static PQconninfoOption *conninfo_parse(const char *s)
{
    char *msg = NULL;
    if (uri_userinfo_spilled(s))
        return NULL;
    PQconninfoOption *opts = PQconninfoParse(s, &msg);
    PQfreemem(msg);
    return opts;
}

static bool holds_secret(const char *s, int depth);

/* Whether an option's value must not be shown: a secret, or a dbname that
 * libpq expands as a connection string holding one (or one nested too deep
 * or not parseable, which is assumed to). */
static bool option_secret(const PQconninfoOption *o, int depth)
{
    if (o->val == NULL)
        return false;
    if (o->dispchar && strchr(o->dispchar, '*'))
        return *o->val != '\0';
    if (!strcmp(o->keyword, "dbname") && looks_like_conninfo(o->val))
        return depth >= REDACT_MAX_DEPTH || holds_secret(o->val, depth + 1);
    return false;
}

/* True if s holds a non-empty secret, or cannot be parsed (then it may). */
static bool holds_secret(const char *s, int depth)
{
    PQconninfoOption *opts = conninfo_parse(s);
    bool any = opts == NULL;
    for (const PQconninfoOption *o = opts; o && o->keyword && !any; o++)
        any = option_secret(o, depth);
    PQconninfoFree(opts);
    return any;
}

bool pgs_conninfo_has_password(const char *conninfo)
{
    return holds_secret(conninfo ? conninfo : "", 0);
}

/* A value as libpq reads it back: bare when it is a plain word, else in
 * single quotes with ' and \ escaped. Control characters become '?', so the
 * result stays on one line (it is for display only). */
static void put_value(FILE *f, const char *v)
{
    bool quote = *v == '\0';
    for (const char *p = v; *p && !quote; p++)
        quote = isspace((unsigned char)*p) || *p == '\'' || *p == '\\';
    if (quote)
        fputc('\'', f);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '\'' || *p == '\\')
            fputc('\\', f);
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
    }
    if (quote)
        fputc('\'', f);
}

char *pgs_conninfo_redact(const char *conninfo)
{
    PQconninfoOption *opts = conninfo_parse(conninfo ? conninfo : "");
    if (opts == NULL)
        return strdup(UNPARSEABLE);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (f == NULL) {
        PQconninfoFree(opts);
        return NULL;
    }
    bool first = true;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL)
            continue;
        fprintf(f, "%s%s=", first ? "" : " ", o->keyword);
        first = false;
        if (option_secret(o, 0) || (o->dispchar && strchr(o->dispchar, '*')))
            fputs(REDACTED, f);
        else
            put_value(f, o->val);
    }
    PQconninfoFree(opts);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
