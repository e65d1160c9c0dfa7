/* plan_sqlname.c: table, column and object names as the server reads them:
 * plain identifiers (case-folded) or "quoted" ones, dot-separated. */
#include "plan_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQL_NAME_MAX 63 /* NAMEDATALEN - 1: longer names get truncated */

void sql_name_clear(sql_name *n)
{
    for (int i = 0; i < n->nparts; i++)
        free(n->part[i]);
    memset(n, 0, sizeof *n);
}

bool sql_name_equal(const sql_name *a, const sql_name *b)
{
    if (a->nparts != b->nparts)
        return false;
    for (int i = 0; i < a->nparts; i++)
        if (strcmp(a->part[i], b->part[i]) != 0)
            return false;
    return true;
}

static bool ident_start(unsigned char ch)
{
    return isalpha(ch) || ch == '_' || ch >= 0x80;
}

bool sql_ident_cont(unsigned char ch)
{
    return ident_start(ch) || isdigit(ch) || ch == '$';
}

static const char *char_text(char *buf, size_t n, unsigned char ch)
{
    if (ch == ' ')
        snprintf(buf, n, "a space");
    else if (ch > 0x20 && ch < 0x7f)
        snprintf(buf, n, "'%c'", ch);
    else
        snprintf(buf, n, "byte 0x%02x", ch);
    return buf;
}

/* Splits s into at most maxparts dot-separated identifiers, each plain
 * (folded to lower case, as the server does) or double-quoted (unquoted,
 * "" read as "). On failure, says why in why[] and leaves out cleared;
 * false with an empty why[] means out of memory. */
bool sql_name_parse(const char *s, int maxparts, sql_name *out, char *why, size_t whylen)
{
    const char *p = s;
    char ch[16];

    memset(out, 0, sizeof *out);
    why[0] = '\0';
    if (!*p) {
        snprintf(why, whylen, "it is empty");
        return false;
    }
    for (;;) {
        size_t o = 0;
        char *part;

        if (out->nparts == maxparts) {
            snprintf(why, whylen, "it has more than %d part%s", maxparts, maxparts > 1 ? "s" : "");
            goto failed;
        }
        if (!(part = malloc(strlen(p) + 1)))
            goto failed;
        out->part[out->nparts++] = part;
        if (*p == '"') {
            for (p++;; p++) {
                if (!*p) {
                    snprintf(why, whylen, "a double quote is not closed");
                    goto failed;
                }
                if (*p == '"' && p[1] == '"')
                    part[o++] = *p++;
                else if (*p == '"')
                    break;
                else
                    part[o++] = *p;
            }
            p++;
            if (o == 0) {
                snprintf(why, whylen, "a quoted name is empty");
                goto failed;
            }
            if (*p && *p != '.') {
                snprintf(why, whylen, "%s follows a closing double quote",
                         char_text(ch, sizeof ch, (unsigned char)*p));
                goto failed;
            }
        } else {
            if (!*p || *p == '.') {
                snprintf(why, whylen, "a part is empty");
                goto failed;
            }
            if (!ident_start((unsigned char)*p)) {
                snprintf(why, whylen, "%s cannot start a name outside double quotes",
                         char_text(ch, sizeof ch, (unsigned char)*p));
                goto failed;
            }
            for (; sql_ident_cont((unsigned char)*p); p++)
                part[o++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;
            if (*p && *p != '.') {
                snprintf(why, whylen, "%s is not allowed outside double quotes",
                         char_text(ch, sizeof ch, (unsigned char)*p));
                goto failed;
            }
        }
        part[o] = '\0';
        if (o > SQL_NAME_MAX) {
            snprintf(why, whylen, "a part is longer than %d bytes", SQL_NAME_MAX);
            goto failed;
        }
        if (!*p)
            return true;
        p++; /* the dot */
        if (!*p) {
            snprintf(why, whylen, "a part is empty");
            goto failed;
        }
    }

failed:
    sql_name_clear(out);
    return false;
}
