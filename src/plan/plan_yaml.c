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

/* Parses the text into a tree of one document. NULL (with the error
 * written) on syntax errors, a second document, anchors, aliases, tags. */
ynode *ynode_read(plan_ctx *c)
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
const ynode *ymap_get(const ynode *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const ynode *k = map->kids[i];
        if (k->kind == YN_SCALAR && !strcmp(k->text, key))
            return map->kids[i + 1];
    }
    return NULL;
}
