/* plan_yaml.c: the plan's YAML, read through libyaml's event API into a
 * tree of ynodes. Anchors, aliases, tags, a second document and silly
 * nesting are refused here, with the line they are on. */
#include "plan_int.h"

#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define PLAN_MAX_DEPTH 32 /* a plan nests 4 levels; refuse silly inputs */

void ynode_free(ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        ynode_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

const char *ynode_kind_name(const ynode *n)
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

/* The reader between events: the tree so far and its open lists and
 * mappings, innermost last. */
typedef struct yreader {
    plan_ctx *c;
    ynode *root;
    ynode *stack[PLAN_MAX_DEPTH];
    size_t depth;
    int docs;
} yreader;

typedef enum read_step {
    READ_MORE,
    READ_DONE,
    READ_FAILED,
} read_step;

static ynode *open_parent(const yreader *r)
{
    return r->depth ? r->stack[r->depth - 1] : NULL;
}

/* Plain empty, ~ and null (in three spellings) are YAML's null. */
static bool scalar_is_null(const yaml_event_t *ev, const ynode *n)
{
    return ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (n->len == 0 || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
            !strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
}

static bool read_scalar(yreader *r, const yaml_event_t *ev, size_t line)
{
    ynode *n;

    if (!yaml_check_props(r->c, line, ev->data.scalar.anchor, ev->data.scalar.tag))
        return false;
    n = calloc(1, sizeof *n);
    if (!n || !(n->text = malloc(ev->data.scalar.length + 1))) {
        free(n);
        return plan_oom(r->c);
    }
    n->kind = YN_SCALAR;
    n->line = line;
    n->len = ev->data.scalar.length;
    memcpy(n->text, ev->data.scalar.value, n->len);
    n->text[n->len] = '\0';
    n->null = scalar_is_null(ev, n);
    return ynode_attach(r->c, &r->root, open_parent(r), n);
}

/* The start of a list or mapping: a node the events up to its end fill. */
static bool read_open(yreader *r, const yaml_event_t *ev, size_t line)
{
    bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
    ynode *n;

    if (seq ? !yaml_check_props(r->c, line, ev->data.sequence_start.anchor,
                                ev->data.sequence_start.tag)
            : !yaml_check_props(r->c, line, ev->data.mapping_start.anchor,
                                ev->data.mapping_start.tag))
        return false;
    if (r->depth == PLAN_MAX_DEPTH)
        return plan_fail(r->c, line, "YAML nesting",
                         "lists and mappings are nested more than %d deep; a plan needs 4",
                         PLAN_MAX_DEPTH);
    if (!(n = calloc(1, sizeof *n)))
        return plan_oom(r->c);
    n->kind = seq ? YN_SEQ : YN_MAP;
    n->line = line;
    if (!ynode_attach(r->c, &r->root, open_parent(r), n))
        return false;
    r->stack[r->depth++] = n;
    return true;
}

/* Takes one event into the tree. */
static read_step read_event(yreader *r, const yaml_event_t *ev)
{
    size_t line = ev->start_mark.line + 1;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return READ_DONE;
    case YAML_DOCUMENT_START_EVENT:
        if (++r->docs > 1) {
            plan_fail(r->c, line, "YAML document",
                      "the file holds a second document (after \"---\"); keep one plan "
                      "per file");
            return READ_FAILED;
        }
        return READ_MORE;
    case YAML_ALIAS_EVENT:
        plan_fail(r->c, line, "YAML alias",
                  "anchors (&name) and aliases (*name) are not supported; write the value "
                  "out in full");
        return READ_FAILED;
    case YAML_SCALAR_EVENT:
        return read_scalar(r, ev, line) ? READ_MORE : READ_FAILED;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return read_open(r, ev, line) ? READ_MORE : READ_FAILED;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (r->depth > 0)
            r->depth--;
        return READ_MORE;
    default:
        return READ_MORE;
    }
}

/* Parses the text into a tree of one document. NULL (with the error
 * written) on syntax errors, a second document, anchors, aliases, tags. */
ynode *ynode_read(plan_ctx *c)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    yreader r = {.c = c};
    read_step step = READ_MORE;

    memset(&ev, 0, sizeof ev);
    if (!yaml_parser_initialize(&parser)) {
        plan_oom(c);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)c->yaml, c->len);
    while (step == READ_MORE) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_syntax_fail(c, &parser);
            step = READ_FAILED;
        } else {
            step = read_event(&r, &ev);
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (step == READ_DONE && (!r.root || (r.root->kind == YN_SCALAR && r.root->null))) {
        plan_fail(c, r.root ? r.root->line : 1, "plan",
                  "the file holds no plan; write at least \"name:\", \"source:\" and "
                  "\"tables:\"");
        step = READ_FAILED;
    }
    if (step == READ_FAILED) {
        ynode_free(r.root);
        return NULL;
    }
    return r.root;
}

/* The value of key in a mapping, or NULL. */
const ynode *ymap_get(const ynode *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const ynode *k = map->kids[i];
        if (k->kind == YN_SCALAR && !strcmp(k->text, key))
            return map->kids[i + 1];
    }
    return NULL;
}
