/* plan.c: reads the migration plan file (YAML, through libyaml's event API)
 * into a pgs_plan and checks everything that can be told from the file
 * alone. Printing connection strings safely is conninfo.c's job. */
#include "pgshift/plan.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <libpq-fe.h>
#include <yaml.h>

#define PLAN_MAX_DEPTH 32        /* a plan nests 4 levels; refuse silly inputs */
#define PLAN_MAX_BYTES (1 << 20) /* a plan is a small text file */
#define PLAN_NAME_MAX  40        /* leaves room in the 63-byte slot name */
#define SQL_NAME_MAX   63        /* NAMEDATALEN - 1: longer names get truncated */
#define KEYPATH_LEN    256
#define QUOTE_LEN      96

/* ---------------------------------------------------------------------------
 * Errors: one line, "<path>:<line>: <key path>: <what is wrong>; <fix>".
 * ------------------------------------------------------------------------- */

typedef struct plan_ctx {
    const char *path;
    const char *yaml;
    size_t len;
    char *err;
    size_t errlen;
} plan_ctx;

/* Keeps the message on one line whatever went into it. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

__attribute__((format(printf, 4, 5))) static bool plan_fail(plan_ctx *c, size_t line,
                                                            const char *what, const char *fmt, ...)
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

static bool plan_oom(plan_ctx *c)
{
    if (c->err && c->errlen > 0)
        snprintf(c->err, c->errlen, "%s: out of memory while reading the plan", c->path);
    return false;
}

/* Writes s into buf as a double-quoted, escaped, length-capped string for
 * messages, and returns buf. */
static const char *quoted(char *buf, size_t n, const char *s)
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
static void keypath_index(char out[KEYPATH_LEN], const char *parent, size_t i)
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
static void keypath_join(char out[KEYPATH_LEN], const char *parent, const char *key)
{
    char q[QUOTE_LEN];
    const char *k = key_is_simple(key) ? key : quoted(q, sizeof q, key);
    if (*parent)
        snprintf(out, KEYPATH_LEN, "%s.%s", parent, k);
    else
        snprintf(out, KEYPATH_LEN, "%s", k);
}

/* ---------------------------------------------------------------------------
 * The YAML tree, built from libyaml events. Anchors, aliases and tags are
 * refused, so every node has exactly one parent and the tree is a tree.
 * ------------------------------------------------------------------------- */

typedef enum ynode_kind {
    YN_SCALAR,
    YN_SEQ,
    YN_MAP,
} ynode_kind;

typedef struct ynode {
    ynode_kind kind;
    size_t line;         /* 1-based */
    bool null;           /* plain empty, ~ or null */
    char *text;          /* scalars: the value, NUL-terminated */
    size_t len;          /* scalars: length, which may include NUL bytes */
    struct ynode **kids; /* sequences: items; mappings: key, value, key, value, ... */
    size_t nkids, cap;
} ynode;

static void ynode_free(ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        ynode_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static const char *ynode_kind_name(const ynode *n)
{
    switch (n->kind) {
    case YN_SEQ:
        return "a list";
    case YN_MAP:
        return "a mapping";
    case YN_SCALAR:
        break;
    }
    return "a single value";
}

/* Hands n to parent (or makes it the root); frees n if that fails. */
static bool ynode_attach(plan_ctx *c, ynode **root, ynode *parent, ynode *n)
{
    if (!parent) {
        *root = n;
        return true;
    }
    if (parent->nkids == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        ynode **kids = realloc(parent->kids, cap * sizeof *kids);
        if (!kids) {
            ynode_free(n);
            return plan_oom(c);
        }
        parent->kids = kids;
        parent->cap = cap;
    }
    parent->kids[parent->nkids++] = n;
    return true;
}

static size_t line_of_offset(const plan_ctx *c, size_t offset)
{
    size_t line = 1;
    for (size_t i = 0; i < offset && i < c->len; i++)
        if (c->yaml[i] == '\n')
            line++;
    return line;
}

/* True if the 1-based line of the text is indented with a tab. */
static bool line_has_tab_indent(const plan_ctx *c, size_t line)
{
    size_t i = 0;
    for (size_t l = 1; l < line && i < c->len; i++)
        if (c->yaml[i] == '\n')
            l++;
    for (; i < c->len && (c->yaml[i] == ' ' || c->yaml[i] == '\t'); i++)
        if (c->yaml[i] == '\t')
            return true;
    return false;
}

static bool yaml_syntax_fail(plan_ctx *c, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "the text cannot be read as YAML";
    size_t line = p->problem_mark.line + 1;

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return plan_oom(c);
    case YAML_READER_ERROR:
        return plan_fail(c, line_of_offset(c, p->problem_offset), "YAML syntax error",
                         "%s; save the file as UTF-8 text", problem);
    default:
        break;
    }
    if (line_has_tab_indent(c, line))
        return plan_fail(c, line, "YAML syntax error",
                         "%s; indent with spaces, YAML does not allow tabs there", problem);
    if (p->context)
        return plan_fail(c, line, "YAML syntax error",
                         "%s (%s on line %zu); check the indentation, and quote values that "
                         "contain \": \", \" #\" or start with a special character",
                         problem, p->context, p->context_mark.line + 1);
    return plan_fail(c, line, "YAML syntax error",
                     "%s; check the indentation, and quote values that contain \": \", \" #\" "
                     "or start with a special character",
                     problem);
}

static bool yaml_check_props(plan_ctx *c, size_t line, const yaml_char_t *anchor,
                             const yaml_char_t *tag)
{
    if (anchor)
        return plan_fail(c, line, "YAML anchor",
                         "anchors (&name) and aliases (*name) are not supported; write the "
                         "value out in full");
    if (tag)
        return plan_fail(c, line, "YAML tag", "tags (!name) are not supported; remove the tag");
    return true;
}

/* Parses the text into a tree of one document. NULL (with the error
 * written) on syntax errors, a second document, anchors, aliases, tags. */
static ynode *yaml_read(plan_ctx *c)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    ynode *stack[PLAN_MAX_DEPTH];
    size_t depth = 0;
    ynode *root = NULL;
    int docs = 0;

    memset(&ev, 0, sizeof ev);
    if (!yaml_parser_initialize(&parser)) {
        plan_oom(c);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)c->yaml, c->len);

    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_syntax_fail(c, &parser);
            goto failed;
        }
        size_t line = ev.start_mark.line + 1;
        ynode *parent = depth ? stack[depth - 1] : NULL;
        ynode *n;

        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            yaml_event_delete(&ev);
            yaml_parser_delete(&parser);
            if (!root || (root->kind == YN_SCALAR && root->null)) {
                plan_fail(c, root ? root->line : 1, "plan",
                          "the file holds no plan; write at least \"name:\", \"source:\" and "
                          "\"tables:\"");
                ynode_free(root);
                return NULL;
            }
            return root;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                plan_fail(c, line, "YAML document",
                          "the file holds a second document (after \"---\"); keep one plan "
                          "per file");
                goto failed;
            }
            break;
        case YAML_ALIAS_EVENT:
            plan_fail(c, line, "YAML alias",
                      "anchors (&name) and aliases (*name) are not supported; write the value "
                      "out in full");
            goto failed;
        case YAML_SCALAR_EVENT:
            if (!yaml_check_props(c, line, ev.data.scalar.anchor, ev.data.scalar.tag))
                goto failed;
            n = calloc(1, sizeof *n);
            if (!n || !(n->text = malloc(ev.data.scalar.length + 1))) {
                free(n);
                plan_oom(c);
                goto failed;
            }
            n->kind = YN_SCALAR;
            n->line = line;
            n->len = ev.data.scalar.length;
            memcpy(n->text, ev.data.scalar.value, n->len);
            n->text[n->len] = '\0';
            n->null = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                      (n->len == 0 || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
                       !strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
            if (!ynode_attach(c, &root, parent, n))
                goto failed;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (ev.type == YAML_SEQUENCE_START_EVENT
                    ? !yaml_check_props(c, line, ev.data.sequence_start.anchor,
                                        ev.data.sequence_start.tag)
                    : !yaml_check_props(c, line, ev.data.mapping_start.anchor,
                                        ev.data.mapping_start.tag))
                goto failed;
            if (depth == PLAN_MAX_DEPTH) {
                plan_fail(c, line, "YAML nesting",
                          "lists and mappings are nested more than %d deep; a plan needs 4",
                          PLAN_MAX_DEPTH);
                goto failed;
            }
            n = calloc(1, sizeof *n);
            if (!n) {
                plan_oom(c);
                goto failed;
            }
            n->kind = ev.type == YAML_SEQUENCE_START_EVENT ? YN_SEQ : YN_MAP;
            n->line = line;
            if (!ynode_attach(c, &root, parent, n))
                goto failed;
            stack[depth++] = n;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }

failed:
    yaml_event_delete(&ev);
    yaml_parser_delete(&parser);
    ynode_free(root);
    return NULL;
}

/* The value of key in a mapping, or NULL. */
static const ynode *ymap_get(const ynode *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const ynode *k = map->kids[i];
        if (k->kind == YN_SCALAR && !strcmp(k->text, key))
            return map->kids[i + 1];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Numbers, sizes and durations.
 * ------------------------------------------------------------------------- */

typedef enum num_result {
    NUM_OK,
    NUM_SYNTAX,
    NUM_RANGE,
} num_result;

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
    {"ms", 1}, {"s", 1000}, {"min", 60 * 1000}, {"h", 60 * 60 * 1000}, {NULL, 0},
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

static num_result size_parse(const char *text, uint64_t *out)
{
    return number_with_unit(text, size_units, out);
}

static num_result duration_parse(const char *text, int *out)
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
    if (size_parse(text, &v) != NUM_OK)
        return false;
    *out = v;
    return true;
}

bool pgs_parse_duration_ms(const char *text, int *out)
{
    int v;
    if (duration_parse(text, &v) != NUM_OK)
        return false;
    *out = v;
    return true;
}

/* A whole number in decimal, optionally negative. */
static num_result int_parse(const char *text, int64_t *out)
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
static const char *duration_text(char *buf, size_t n, int64_t ms)
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

/* ---------------------------------------------------------------------------
 * SQL names: plain identifiers (case-folded) or "quoted" ones.
 * ------------------------------------------------------------------------- */

#define SQL_NAME_PARTS 2

typedef struct sql_name {
    int nparts;
    char *part[SQL_NAME_PARTS]; /* as the server resolves them */
} sql_name;

static void sql_name_clear(sql_name *n)
{
    for (int i = 0; i < n->nparts; i++)
        free(n->part[i]);
    memset(n, 0, sizeof *n);
}

static bool sql_name_equal(const sql_name *a, const sql_name *b)
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

static bool ident_cont(unsigned char ch)
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
static bool sql_name_parse(const char *s, int maxparts, sql_name *out, char *why, size_t whylen)
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
            for (; ident_cont((unsigned char)*p); p++)
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

/* ---------------------------------------------------------------------------
 * The plan's keys, as one declarative table per mapping.
 * ------------------------------------------------------------------------- */

typedef enum field_type {
    F_NAME,     /* the plan name: [a-z0-9_]+ */
    F_CONNINFO, /* libpq conninfo or URI; never echoed */
    F_TEXT,     /* any non-empty text */
    F_BOOL,
    F_INT,          /* int, min..max */
    F_SIZE,         /* uint64_t bytes, at least min */
    F_DURATION,     /* int ms, min..max */
    F_SECTION,      /* a mapping filling the struct at offset */
    F_TABLES,       /* the list of tables */
    F_TABLE_NAME,   /* schema.table or table, kept as written */
    F_PARTITION,    /* the partition mapping, filling the same table */
    F_PARTITION_BY, /* range (<column>) */
    F_NAME_LIST,    /* list of single identifiers, resolved */
} field_type;

typedef struct plan_field {
    const char *key;
    field_type type;
    size_t offset;
    bool required;
    int64_t min, max;
    const char *example; /* a good value, shown in fixes */
    const struct plan_field *sub;
} plan_field;

static const plan_field partition_fields[] = {
    {"by", F_PARTITION_BY, 0, true, 0, 0, "range (created_at)", NULL},
    {"interval", F_TEXT, offsetof(pgs_plan_table, partition_interval), false, 0, 0, "1 month",
     NULL},
    {"default", F_BOOL, offsetof(pgs_plan_table, partition_default), false, 0, 0, "true", NULL},
    {"ahead", F_INT, offsetof(pgs_plan_table, partition_ahead), false, 0, INT_MAX, "3", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field table_fields[] = {
    {"source", F_TABLE_NAME, offsetof(pgs_plan_table, source), true, 0, 0,
     "public.petri_observations", NULL},
    {"target", F_TABLE_NAME, offsetof(pgs_plan_table, target), true, 0, 0,
     "public.petri_observations_partitioned", NULL},
    {"partition", F_PARTITION, 0, false, 0, 0, "{by: range (created_at), interval: 1 month}",
     partition_fields},
    {"key", F_NAME_LIST, offsetof(pgs_plan_table, key), false, 0, 0, "[id]", NULL},
    {"leave_behind", F_NAME_LIST, offsetof(pgs_plan_table, leave_behind), false, 0, 0,
     "[audit_trigger]", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field cutover_fields[] = {
    {"max_lag", F_SIZE, offsetof(pgs_plan_cutover, max_lag_bytes), false, 0, 0, "8MB", NULL},
    {"lock_timeout", F_DURATION, offsetof(pgs_plan_cutover, lock_timeout_ms), false, 1, 60000,
     "500ms", NULL},
    {"attempts", F_INT, offsetof(pgs_plan_cutover, attempts), false, 1, INT_MAX, "20", NULL},
    {"fence_timeout", F_DURATION, offsetof(pgs_plan_cutover, fence_timeout_ms), false, 1, 600000,
     "2s", NULL},
    {"postpone", F_BOOL, offsetof(pgs_plan_cutover, postpone), false, 0, 0, "false", NULL},
    {"postpone_file", F_TEXT, offsetof(pgs_plan_cutover, postpone_file), false, 0, 0,
     "/tmp/petri.postpone", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field copy_fields[] = {
    {"workers", F_INT, offsetof(pgs_plan_copy, workers), false, 0, 64, "4", NULL},
    {"chunk_size", F_SIZE, offsetof(pgs_plan_copy, chunk_bytes), false, 1, 0, "64MB", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field apply_fields[] = {
    {"batch_changes", F_INT, offsetof(pgs_plan_apply, batch_changes), false, 1, INT_MAX, "20000",
     NULL},
    {"batch_time", F_DURATION, offsetof(pgs_plan_apply, batch_ms), false, 1, INT_MAX, "200ms",
     NULL},
    {"idle_commit_time", F_DURATION, offsetof(pgs_plan_apply, idle_commit_ms), false, 1, INT_MAX,
     "20ms", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field hooks_fields[] = {
    {"copy_done", F_TEXT, offsetof(pgs_plan_hooks, copy_done), false, 0, 0,
     "'notify-chat copy done'", NULL},
    {"ready", F_TEXT, offsetof(pgs_plan_hooks, ready), false, 0, 0, "'notify-chat ready'", NULL},
    {"cutover_started", F_TEXT, offsetof(pgs_plan_hooks, cutover_started), false, 0, 0,
     "'notify-chat cutover started'", NULL},
    {"cutover_done", F_TEXT, offsetof(pgs_plan_hooks, cutover_done), false, 0, 0,
     "'notify-chat cutover done'", NULL},
    {"failed", F_TEXT, offsetof(pgs_plan_hooks, failed), false, 0, 0, "'page-oncall'", NULL},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

static const plan_field top_fields[] = {
    {"name", F_NAME, offsetof(pgs_plan, name), true, 0, 0, "petri", NULL},
    {"source", F_CONNINFO, offsetof(pgs_plan, source), true, 0, 0, "'host=db1 dbname=app'", NULL},
    {"target", F_CONNINFO, offsetof(pgs_plan, target), false, 0, 0, "'host=db2 dbname=app'", NULL},
    {"state_dir", F_TEXT, offsetof(pgs_plan, state_dir), false, 0, 0, "/var/run/pgshift", NULL},
    {"tables", F_TABLES, 0, true, 0, 0, "[{source: public.a, target: public.a_new}]", table_fields},
    {"cutover", F_SECTION, offsetof(pgs_plan, cutover), false, 0, 0, "{max_lag: 8MB}",
     cutover_fields},
    {"copy", F_SECTION, offsetof(pgs_plan, copy), false, 0, 0, "{workers: 4}", copy_fields},
    {"apply", F_SECTION, offsetof(pgs_plan, apply), false, 0, 0, "{batch_changes: 20000}",
     apply_fields},
    {"hooks", F_SECTION, offsetof(pgs_plan, hooks), false, 0, 0, "{failed: 'page-oncall'}",
     hooks_fields},
    {NULL, 0, 0, false, 0, 0, NULL, NULL},
};

/* Where a key that is unknown in one mapping does belong. */
static const struct {
    const plan_field *fields;
    const char *where;
} key_homes[] = {
    {top_fields, "move it to the top level"},
    {table_fields, "move it into a table under \"tables:\""},
    {partition_fields, "move it under the table's \"partition:\""},
    {cutover_fields, "move it under \"cutover:\""},
    {copy_fields, "move it under \"copy:\""},
    {apply_fields, "move it under \"apply:\""},
    {hooks_fields, "move it under \"hooks:\""},
};

static const plan_field *field_find(const plan_field *fields, const char *key)
{
    for (const plan_field *f = fields; f->key; f++)
        if (!strcmp(f->key, key))
            return f;
    return NULL;
}

/* Edit distance counting a swap of two neighbours as one edit (optimal
 * string alignment), case-insensitive; SIZE_MAX for long strings. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[65][65];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ai = tolower((unsigned char)a[i - 1]), bj = tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j - 1] + (ai != bj);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ai == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == bj && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static bool unknown_key(plan_ctx *c, const ynode *k, const char *kp, const plan_field *fields)
{
    const plan_field *best = NULL;
    size_t best_d = SIZE_MAX;
    char known[KEYPATH_LEN] = "";

    for (const plan_field *f = fields; f->key; f++) {
        size_t d = edit_distance(k->text, f->key);
        if (d < best_d) {
            best_d = d;
            best = f;
        }
        size_t used = strlen(known);
        snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", f->key);
    }
    if (best && best_d <= 2 && best_d * 2 < strlen(best->key))
        return plan_fail(c, k->line, kp, "unknown key; did you mean \"%s\"?", best->key);
    for (size_t i = 0; i < sizeof key_homes / sizeof key_homes[0]; i++)
        if (key_homes[i].fields != fields && field_find(key_homes[i].fields, k->text))
            return plan_fail(c, k->line, kp, "unknown key here; %s", key_homes[i].where);
    return plan_fail(c, k->line, kp, "unknown key; the keys here are %s", known);
}

static bool fill_map(plan_ctx *c, const ynode *map, const char *kpath, const plan_field *fields,
                     char *base);

/* The scalar text of v, or NULL (error written) if v is not a scalar. */
static const char *want_scalar(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f)
{
    if (v->kind != YN_SCALAR) {
        plan_fail(c, v->line, kp, "expected a single value, found %s; write e.g. \"%s: %s\"",
                  ynode_kind_name(v), f->key, f->example);
        return NULL;
    }
    if (strlen(v->text) != v->len) {
        plan_fail(c, v->line, kp, "the value contains a NUL character; remove it");
        return NULL;
    }
    return v->text;
}

static bool want_kind(plan_ctx *c, const ynode *v, ynode_kind kind, const char *kp, const char *fix)
{
    if (v->kind == kind)
        return true;
    return plan_fail(c, v->line, kp, "expected %s, found %s; %s",
                     kind == YN_MAP ? "a mapping" : "a list", ynode_kind_name(v), fix);
}

static bool fill_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
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
                         quoted(q, sizeof q, s), len, PLAN_NAME_MAX);
    for (const char *p = s; *p && o < PLAN_NAME_MAX; p++)
        fix[o++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    fix[o] = '\0';
    return plan_fail(c, v->line, kp, "%s may only contain a-z, 0-9 and _; use e.g. \"%s\"",
                     quoted(q, sizeof q, s), fix);
}

/* The value may hold a password: say what is wrong, never show it. */
static bool fill_conninfo(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
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

static bool fill_bool(plan_ctx *c, const ynode *v, const char *kp, const char *s, bool *dst)
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
                     quoted(q, sizeof q, s));
}

static bool fill_int(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                     const char *s, int *dst)
{
    char q[QUOTE_LEN];
    int64_t n;

    switch (int_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp, "%s is not a whole number; use e.g. %s",
                         quoted(q, sizeof q, s), f->example);
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
                             quoted(q, sizeof q, s), f->min, INT_MAX);
        return plan_fail(c, v->line, kp,
                         "%s is out of range; use a number from %" PRId64 " to %" PRId64,
                         quoted(q, sizeof q, s), f->min, f->max);
    }
    *dst = (int)n;
    return true;
}

static bool fill_size(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                      const char *s, uint64_t *dst)
{
    char q[QUOTE_LEN];
    uint64_t n;

    switch (size_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp,
                         "%s is not a size; use a whole number with a unit B, kB, MB, GB or TB, "
                         "e.g. %s",
                         quoted(q, sizeof q, s), f->example);
    case NUM_RANGE:
        return plan_fail(c, v->line, kp, "%s is too large; use e.g. %s", quoted(q, sizeof q, s),
                         f->example);
    case NUM_OK:
        break;
    }
    if (n < (uint64_t)f->min)
        return plan_fail(c, v->line, kp, "%s is too small; use at least %" PRId64 "B, e.g. %s",
                         quoted(q, sizeof q, s), f->min, f->example);
    *dst = n;
    return true;
}

static bool fill_duration(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                          const char *s, int *dst)
{
    char q[QUOTE_LEN], lo[32], hi[32];
    int n = 0;

    switch (duration_parse(s, &n)) {
    case NUM_SYNTAX:
        return plan_fail(c, v->line, kp,
                         "%s is not a duration; use a whole number with a unit ms, s, min or h, "
                         "e.g. %s",
                         quoted(q, sizeof q, s), f->example);
    case NUM_RANGE:
        n = INT_MAX;
        if (f->max == INT_MAX)
            return plan_fail(c, v->line, kp, "%s is too large; use e.g. %s", quoted(q, sizeof q, s),
                             f->example);
        break;
    case NUM_OK:
        break;
    }
    if (n < f->min || n > f->max) {
        if (f->max == INT_MAX)
            return plan_fail(c, v->line, kp, "%s is out of range; use at least %s, e.g. %s",
                             quoted(q, sizeof q, s), duration_text(lo, sizeof lo, f->min),
                             f->example);
        return plan_fail(c, v->line, kp, "%s is out of range; use a duration from %s to %s",
                         quoted(q, sizeof q, s), duration_text(lo, sizeof lo, f->min),
                         duration_text(hi, sizeof hi, f->max));
    }
    *dst = n;
    return true;
}

static bool fill_text(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                      const char *s, char **dst)
{
    if (!*s)
        return plan_fail(c, v->line, kp, "is empty; use e.g. \"%s: %s\" or remove the key", f->key,
                         f->example);
    *dst = strdup(s);
    return *dst ? true : plan_oom(c);
}

static bool fill_table_name(plan_ctx *c, const ynode *v, const char *kp, const char *s, char **dst)
{
    char q[QUOTE_LEN], why[96];
    sql_name n;

    if (!sql_name_parse(s, 2, &n, why, sizeof why)) {
        if (!why[0])
            return plan_oom(c);
        if (!*s)
            return plan_fail(c, v->line, kp,
                             "is empty; write schema.table or table, e.g. public.orders");
        return plan_fail(c, v->line, kp,
                         "%s is not a table name: %s; write schema.table or table, "
                         "double-quoting a part with other characters (\"My Table\")",
                         quoted(q, sizeof q, s), why);
    }
    sql_name_clear(&n);
    *dst = strdup(s);
    return *dst ? true : plan_oom(c);
}

/* One column or object name, resolved as the server would (see plan.h). */
static bool resolve_ident(plan_ctx *c, const ynode *v, const char *kp, const char *what,
                          const char *s, char **dst)
{
    char q[QUOTE_LEN], why[96];
    sql_name n;

    if (!sql_name_parse(s, 1, &n, why, sizeof why)) {
        if (!why[0])
            return plan_oom(c);
        return plan_fail(c, v->line, kp,
                         "%s is not %s name: %s; write the name alone, double-quoted if it "
                         "has other characters or capitals (\"Created At\")",
                         quoted(q, sizeof q, s), what, why);
    }
    *dst = n.part[0];
    return true;
}

static bool fill_partition_by(plan_ctx *c, const ynode *v, const char *kp, const char *s,
                              pgs_plan_table *t)
{
    static const char fix[] = "use \"range (<column>)\", e.g. \"range (created_at)\"";
    char q[QUOTE_LEN], col[256];
    const char *p = s, *start;
    bool inq = false;
    size_t n;

    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "range", 5) != 0 || ident_cont((unsigned char)p[5])) {
        size_t w = 0;
        while (ident_cont((unsigned char)p[w]))
            w++;
        if (w > 0 && (p[w] == '\0' || p[w] == ' ' || p[w] == '('))
            return plan_fail(c, v->line, kp, "%s is not supported; use \"range (<column>)\"",
                             quoted(q, sizeof q, s));
        return plan_fail(c, v->line, kp, "%s is not a partition method; %s", quoted(q, sizeof q, s),
                         fix);
    }
    for (p += 5; isspace((unsigned char)*p); p++)
        ;
    if (*p != '(')
        return plan_fail(c, v->line, kp, "%s lacks the column in parentheses; %s",
                         quoted(q, sizeof q, s), fix);
    for (p++; isspace((unsigned char)*p); p++)
        ;
    for (start = p; *p && (inq || *p != ')'); p++) {
        if (*p == '"')
            inq = !inq;
        else if (!inq && (*p == ',' || *p == '('))
            return plan_fail(c, v->line, kp,
                             "%s: partitioning by several columns or an expression is not "
                             "supported; %s",
                             quoted(q, sizeof q, s), fix);
    }
    if (*p != ')')
        return plan_fail(c, v->line, kp, "%s lacks the closing parenthesis; %s",
                         quoted(q, sizeof q, s), fix);
    for (n = (size_t)(p - start); n > 0 && isspace((unsigned char)start[n - 1]); n--)
        ;
    for (p++; isspace((unsigned char)*p); p++)
        ;
    if (*p)
        return plan_fail(c, v->line, kp, "%s has text after the closing parenthesis; %s",
                         quoted(q, sizeof q, s), fix);
    if (n == 0)
        return plan_fail(c, v->line, kp, "%s names no column; %s", quoted(q, sizeof q, s), fix);
    if (n >= sizeof col)
        return plan_fail(c, v->line, kp, "the column name is too long; %s", fix);
    memcpy(col, start, n);
    col[n] = '\0';
    if (!resolve_ident(c, v, kp, "a column", col, &t->partition_column))
        return false;
    t->partition_method = PGS_PARTITION_RANGE;
    return true;
}

static bool fill_name_list(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                           char ***dst)
{
    char fix[KEYPATH_LEN], ikp[KEYPATH_LEN], q[QUOTE_LEN];
    const char *what = !strcmp(f->key, "key") ? "a column" : "an object";
    char **list;

    snprintf(fix, sizeof fix, "write e.g. \"%s: %s\"", f->key, f->example);
    if (!want_kind(c, v, YN_SEQ, kp, fix))
        return false;
    if (v->nkids == 0)
        return plan_fail(c, v->line, kp, "is empty; list at least one name or remove the key");
    if (!(list = calloc(v->nkids + 1, sizeof *list)))
        return plan_oom(c);
    *dst = list;
    for (size_t i = 0; i < v->nkids; i++) {
        const ynode *item = v->kids[i];
        const char *s;

        keypath_index(ikp, kp, i);
        if (item->kind == YN_SCALAR && item->null)
            return plan_fail(c, item->line, ikp, "has no value; %s", fix);
        if (!(s = want_scalar(c, item, ikp, f)))
            return false;
        if (!resolve_ident(c, item, ikp, what, s, &list[i]))
            return false;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(list[j], list[i]))
                return plan_fail(c, item->line, ikp, "%s is listed twice; keep one",
                                 quoted(q, sizeof q, s));
    }
    return true;
}

static bool fill_partition(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                           pgs_plan_table *t)
{
    char ikp[KEYPATH_LEN];

    if (!want_kind(c, v, YN_MAP, kp,
                   "write \"by: range (<column>)\" and \"interval: 1 month\" indented under "
                   "\"partition:\""))
        return false;
    if (!fill_map(c, v, kp, f->sub, (char *)t))
        return false;
    if (!t->partition_interval && !t->partition_default) {
        keypath_join(ikp, kp, "interval");
        return plan_fail(c, v->line, ikp,
                         "is missing; add e.g. \"interval: 1 month\", or \"default: true\" for "
                         "only a DEFAULT partition");
    }
    return true;
}

/* Checks table i against itself and the ones before it. */
static bool check_table_names(plan_ctx *c, const ynode *item, const char *kp, size_t i,
                              sql_name *src, sql_name *dst, const pgs_plan_table *tables,
                              const ynode *const *items)
{
    char q[QUOTE_LEN], ekp[KEYPATH_LEN];
    const ynode *sv = ymap_get(item, "source"), *tv = ymap_get(item, "target");

    if (sql_name_equal(&src[i], &dst[i])) {
        keypath_join(ekp, kp, "target");
        return plan_fail(c, tv->line, ekp,
                         "%s is the same table as the source; name a new table to migrate to",
                         quoted(q, sizeof q, tables[i].target));
    }
    for (size_t j = 0; j < i; j++) {
        size_t jline = items[j]->line;
        if (sql_name_equal(&src[i], &src[j])) {
            keypath_join(ekp, kp, "source");
            return plan_fail(c, sv->line, ekp,
                             "%s is already the source of tables[%zu] (line %zu); list each "
                             "source table once",
                             quoted(q, sizeof q, tables[i].source), j, jline);
        }
        if (sql_name_equal(&dst[i], &dst[j])) {
            keypath_join(ekp, kp, "target");
            return plan_fail(c, tv->line, ekp,
                             "%s is already the target of tables[%zu] (line %zu); give each "
                             "table its own target",
                             quoted(q, sizeof q, tables[i].target), j, jline);
        }
        if (sql_name_equal(&src[i], &dst[j]) || sql_name_equal(&dst[i], &src[j])) {
            bool is_src = sql_name_equal(&src[i], &dst[j]);
            keypath_join(ekp, kp, is_src ? "source" : "target");
            return plan_fail(c, is_src ? sv->line : tv->line, ekp,
                             "%s is also the %s of tables[%zu] (line %zu); a table cannot be "
                             "both a source and a target",
                             quoted(q, sizeof q, is_src ? tables[i].source : tables[i].target),
                             is_src ? "target" : "source", j, jline);
        }
    }
    return true;
}

static bool fill_tables(plan_ctx *c, const ynode *v, const char *kp, const plan_field *f,
                        pgs_plan *plan)
{
    static const char item_fix[] =
        "write each table as \"- source: schema.table\" with \"target: schema.table\" below it";
    char ikp[KEYPATH_LEN], why[96];
    sql_name *src = NULL, *dst = NULL;
    bool ok = false;

    if (!want_kind(c, v, YN_SEQ, kp, item_fix))
        return false;
    if (v->nkids == 0)
        return plan_fail(c, v->line, kp, "is empty; list at least one table to migrate");
    plan->tables = calloc(v->nkids, sizeof *plan->tables);
    src = calloc(v->nkids, sizeof *src);
    dst = calloc(v->nkids, sizeof *dst);
    if (!plan->tables || !src || !dst) {
        plan_oom(c);
        goto done;
    }
    plan->ntables = v->nkids;
    for (size_t i = 0; i < v->nkids; i++) {
        const ynode *item = v->kids[i];
        pgs_plan_table *t = &plan->tables[i];

        keypath_index(ikp, kp, i);
        t->partition_ahead = 3;
        if (item->kind == YN_SCALAR && item->null) {
            plan_fail(c, item->line, ikp, "is empty; remove the \"-\" line or %s", item_fix);
            goto done;
        }
        if (!want_kind(c, item, YN_MAP, ikp, item_fix) ||
            !fill_map(c, item, ikp, f->sub, (char *)t))
            goto done;
        /* Both names passed fill_table_name(), so only memory can fail here. */
        if (!sql_name_parse(t->source, 2, &src[i], why, sizeof why) ||
            !sql_name_parse(t->target, 2, &dst[i], why, sizeof why)) {
            plan_oom(c);
            goto done;
        }
        if (!check_table_names(c, item, ikp, i, src, dst, plan->tables,
                               (const ynode *const *)v->kids))
            goto done;
    }
    ok = true;

done:
    for (size_t i = 0; src && dst && i < v->nkids; i++) {
        sql_name_clear(&src[i]);
        sql_name_clear(&dst[i]);
    }
    free(src);
    free(dst);
    return ok;
}

static bool fill_field(plan_ctx *c, const plan_field *f, const ynode *v, const char *kp, char *base)
{
    /* fix holds known plus a short sentence around it */
    char fix[KEYPATH_LEN + 64], known[KEYPATH_LEN] = "";
    void *dst = base + f->offset;
    const char *s = NULL;

    switch (f->type) {
    case F_SECTION:
        for (const plan_field *sf = f->sub; sf->key; sf++) {
            size_t used = strlen(known);
            snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", sf->key);
        }
        snprintf(fix, sizeof fix, "indent its keys (%s) under \"%s:\"", known, f->key);
        return want_kind(c, v, YN_MAP, kp, fix) && fill_map(c, v, kp, f->sub, dst);
    case F_TABLES:
        return fill_tables(c, v, kp, f, (pgs_plan *)base);
    case F_PARTITION:
        return fill_partition(c, v, kp, f, (pgs_plan_table *)base);
    case F_NAME_LIST:
        return fill_name_list(c, v, kp, f, dst);
    default:
        break;
    }

    if (!(s = want_scalar(c, v, kp, f)))
        return false;
    switch (f->type) {
    case F_NAME:
        return fill_name(c, v, kp, s, dst);
    case F_CONNINFO:
        return fill_conninfo(c, v, kp, s, dst);
    case F_TEXT:
        return fill_text(c, v, kp, f, s, dst);
    case F_BOOL:
        return fill_bool(c, v, kp, s, dst);
    case F_INT:
        return fill_int(c, v, kp, f, s, dst);
    case F_SIZE:
        return fill_size(c, v, kp, f, s, dst);
    case F_DURATION:
        return fill_duration(c, v, kp, f, s, dst);
    case F_TABLE_NAME:
        return fill_table_name(c, v, kp, s, dst);
    case F_PARTITION_BY:
        return fill_partition_by(c, v, kp, s, (pgs_plan_table *)base);
    default:
        break;
    }
    return true;
}

/* Fills base from a mapping by the table fields[]: unknown and repeated keys
 * are errors, keys are read in file order, required keys are checked last. */
static bool fill_map(plan_ctx *c, const ynode *map, const char *kpath, const plan_field *fields,
                     char *base)
{
    char kp[KEYPATH_LEN];

    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const ynode *k = map->kids[i], *v = map->kids[i + 1];
        const plan_field *f;

        if (k->kind != YN_SCALAR || k->null || strlen(k->text) != k->len)
            return plan_fail(c, k->line, *kpath ? kpath : "plan",
                             "found %s where a key should be; write \"key: value\"",
                             k->kind == YN_SCALAR ? "an empty key" : ynode_kind_name(k));
        keypath_join(kp, kpath, k->text);
        if (!(f = field_find(fields, k->text)))
            return unknown_key(c, k, kp, fields);
        for (size_t j = 0; j < i; j += 2) {
            const ynode *prev = map->kids[j];
            if (!strcmp(prev->text, k->text))
                return plan_fail(c, k->line, kp, "is given twice (first on line %zu); keep one",
                                 prev->line);
        }
        if (v->kind == YN_SCALAR && v->null)
            return plan_fail(c, k->line, kp, "has no value; write e.g. \"%s: %s\"%s", f->key,
                             f->example, f->required ? "" : " or remove the key");
        if (!fill_field(c, f, v, kp, base))
            return false;
    }
    for (const plan_field *f = fields; f->key; f++) {
        if (f->required && !ymap_get(map, f->key)) {
            keypath_join(kp, kpath, f->key);
            return plan_fail(c, map->line, kp, "is missing; add e.g. \"%s: %s\"", f->key,
                             f->example);
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------
 * Public entry points.
 * ------------------------------------------------------------------------- */

static void free_list(char **list)
{
    if (!list)
        return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

void pgs_plan_free(pgs_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; plan->tables && i < plan->ntables; i++) {
        pgs_plan_table *t = &plan->tables[i];
        free(t->source);
        free(t->target);
        free(t->partition_column);
        free(t->partition_interval);
        free_list(t->key);
        free_list(t->leave_behind);
    }
    free(plan->tables);
    free(plan->cutover.postpone_file);
    free(plan->hooks.copy_done);
    free(plan->hooks.ready);
    free(plan->hooks.cutover_started);
    free(plan->hooks.cutover_done);
    free(plan->hooks.failed);
    free(plan->state_dir);
    free(plan->target);
    free(plan->source);
    free(plan->name);
    free(plan->path);
    free(plan);
}

pgs_plan *pgs_plan_parse(const char *yaml, size_t len, const char *path, char *err, size_t errlen)
{
    plan_ctx c = {path ? path : "<plan>", yaml ? yaml : "", yaml ? len : 0, err, errlen};
    pgs_plan *plan = NULL;
    ynode *root;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!(root = yaml_read(&c)))
        return NULL;
    if (root->kind != YN_MAP) {
        plan_fail(&c, root->line, "plan",
                  "expected a mapping of keys (name, source, tables, ...), found %s; write "
                  "one \"key: value\" per line",
                  ynode_kind_name(root));
        goto failed;
    }
    if (!(plan = calloc(1, sizeof *plan)) || !(plan->path = strdup(c.path))) {
        plan_oom(&c);
        goto failed;
    }
    plan->cutover.max_lag_bytes = UINT64_C(8) << 20;
    plan->cutover.lock_timeout_ms = 500;
    plan->cutover.attempts = 20;
    plan->cutover.fence_timeout_ms = 2000;
    plan->copy.workers = 0;
    plan->copy.chunk_bytes = UINT64_C(64) << 20;
    plan->apply.batch_changes = 20000;
    plan->apply.batch_ms = 200;
    plan->apply.idle_commit_ms = 20;
    if (!fill_map(&c, root, "", top_fields, (char *)plan))
        goto failed;
    if (!plan->state_dir && !(plan->state_dir = strdup("/tmp"))) {
        plan_oom(&c);
        goto failed;
    }
    ynode_free(root);
    return plan;

failed:
    ynode_free(root);
    pgs_plan_free(plan);
    return NULL;
}

pgs_plan *pgs_plan_load(const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    pgs_plan *plan;
    FILE *f;

    if (!(f = fopen(path, "rb"))) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot open the plan: %s; check the path", path,
                     strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            char *more;
            cap = cap ? cap * 2 : 16384;
            if (cap > PLAN_MAX_BYTES + 1)
                cap = PLAN_MAX_BYTES + 1;
            if (len == cap || !(more = realloc(buf, cap)))
                break;
            buf = more;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f) || !buf) {
        int e = ferror(f) ? errno : ENOMEM;
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot read the plan: %s; check the path", path,
                     strerror(e));
        plan = NULL;
    } else if (len > PLAN_MAX_BYTES) {
        if (err && errlen > 0)
            snprintf(err, errlen,
                     "%s: the file is larger than %d kB; a plan is a small text "
                     "file, check the path",
                     path, PLAN_MAX_BYTES / 1024);
        plan = NULL;
    } else {
        plan = pgs_plan_parse(buf, len, path, err, errlen);
    }
    /* libpq's rule for a .pgpass file: any group or world bit is too many. */
    struct stat st;
    if (plan && fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        plan->password_exposed = pgs_conninfo_has_password(plan->source) ||
                                 (plan->target && pgs_conninfo_has_password(plan->target));
    fclose(f);
    free(buf);
    return plan;
}
