/* plan_msg.c: the parser's error line, "<path>:<line>: <key path>: <what is
 * wrong>; <fix>", and the pieces that go into it: quoted values and key
 * paths. */
#include "plan_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Keeps the message on one line whatever went into it. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

bool plan_fail(plan_ctx *c, size_t line, const char *what, const char *fmt, ...)
{
    if (!c->err || c->errlen == 0)
        return false;
    int n = snprintf(c->err, c->errlen, "%s:%zu: %s: ", c->path, line, what);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    one_line(c->err);
    return false;
}

bool plan_oom(plan_ctx *c)
{
    if (c->err && c->errlen > 0)
        snprintf(c->err, c->errlen, "%s: out of memory while reading the plan", c->path);
    return false;
}

/* Writes s into buf as a double-quoted, escaped, length-capped string for
 * messages, and returns buf. */
const char *plan_quoted(char *buf, size_t n, const char *s)
{
    size_t o = 0;
    bool cut = false;

    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        size_t need = (*p == '"' || *p == '\\') ? 2 : (*p < 0x20 || *p == 0x7f) ? 4 : 1;
        if (o + need + 5 > n) { /* room for ..." and the NUL */
            cut = true;
            break;
        }
        if (need == 2) {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (need == 4) {
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *p);
        } else {
            buf[o++] = (char)*p;
        }
    }
    if (cut) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* "parent[i]"; a path too long for the buffer is cut with "...". */
void plan_keypath_index(char out[KEYPATH_LEN], const char *parent, size_t i)
{
    int n = snprintf(out, KEYPATH_LEN, "%s[%zu]", parent, i);
    if (n < 0 || n >= KEYPATH_LEN)
        memcpy(out + KEYPATH_LEN - 4, "...", 4);
}

static bool key_is_simple(const char *key)
{
    if (!*key)
        return false;
    for (const char *p = key; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    return true;
}

/* "parent.key", with the key quoted when it is not a plain word. */
void plan_keypath_join(char out[KEYPATH_LEN], const char *parent, const char *key)
{
    char q[QUOTE_LEN];
    const char *k = key_is_simple(key) ? key : plan_quoted(q, sizeof q, key);
    if (*parent)
        snprintf(out, KEYPATH_LEN, "%s.%s", parent, k);
    else
        snprintf(out, KEYPATH_LEN, "%s", k);
}
