/* plan_yaml.c: the plan's YAML, loaded by libyaml's document API
 * (yaml_parser_load) and walked into a tree of ynodes. Aliases, tags, a
 * second document and silly nesting are refused here, with the line they
 * are on. */
#include "plan_int.h"

#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#define PLAN_MAX_DEPTH 32 /* a plan nests 4 levels; bounds the walk's recursion */

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

static bool yaml_alias_fail(plan_ctx *c, size_t line)
{
    return plan_fail(c, line, "YAML alias",
                     "anchors (&name) and aliases (*name) are not supported; write the value "
                     "out in full");
}

/* libyaml's loader fails on an alias to no anchor and on an anchor given
 * twice; those are ours to word. Everything else is a syntax error. */
static bool yaml_load_fail(plan_ctx *c, const yaml_parser_t *p)
{
    if (p->error != YAML_COMPOSER_ERROR)
        return yaml_syntax_fail(c, p);
    if (p->problem && strstr(p->problem, "alias"))
        return yaml_alias_fail(c, p->problem_mark.line + 1);
    return plan_fail(c, p->problem_mark.line + 1, "YAML anchor",
                     "anchors (&name) and aliases (*name) are not supported; write the value "
                     "out in full");
}

/* The loader gives every untagged node (and one tagged plain "!") its
 * kind's default tag, so anything else was written as a tag; an explicit
 * tag equal to the default (!!str on a scalar) cannot be told apart and is
 * accepted. */
static bool yaml_check_tag(plan_ctx *c, const yaml_node_t *yn, size_t line)
{
    const char *want = YAML_DEFAULT_SCALAR_TAG;

    if (yn->type == YAML_SEQUENCE_NODE)
        want = YAML_DEFAULT_SEQUENCE_TAG;
    else if (yn->type == YAML_MAPPING_NODE)
        want = YAML_DEFAULT_MAPPING_TAG;
    if (yn->tag && strcmp((const char *)yn->tag, want) != 0)
        return plan_fail(c, line, "YAML tag", "tags (!name) are not supported; remove the tag");
    return true;
}

/* The walk of a libyaml document into ynodes. libyaml has already built
 * the whole document, but that costs no more than the file's size: the
 * document API does not expand aliases (an alias is a second reference
 * to a node index), so there is no billion-laughs blowup. The walk
 * refuses the second reference to any node, which also stops an alias to
 * its own ancestor, and keeps a depth limit for its recursion. */
typedef struct ywalk {
    plan_ctx *c;
    yaml_document_t *doc;
    unsigned char *seen; /* by node index: walked already */
    size_t depth;        /* lists and mappings open around the node walked */
} ywalk;

static ynode *walk_node(ywalk *w, int index, size_t ref_line);

/* Plain empty, ~ and null (in three spellings) are YAML's null. */
static bool scalar_is_null(const yaml_node_t *yn, const ynode *n)
{
    return yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (n->len == 0 || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
            !strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
}

static ynode *walk_scalar(ywalk *w, const yaml_node_t *yn, size_t line)
{
    ynode *n = calloc(1, sizeof *n);

    if (!n || !(n->text = malloc(yn->data.scalar.length + 1))) {
        free(n);
        plan_oom(w->c);
        return NULL;
    }
    n->kind = YN_SCALAR;
    n->line = line;
    n->len = yn->data.scalar.length;
    memcpy(n->text, yn->data.scalar.value, n->len);
    n->text[n->len] = '\0';
    n->null = scalar_is_null(yn, n);
    return n;
}

/* Walks one child into n->kids; false (n left to the caller) on error. */
static bool walk_kid(ywalk *w, ynode *n, int index, size_t ref_line)
{
    ynode *kid = walk_node(w, index, ref_line);

    if (!kid)
        return false;
    n->kids[n->nkids++] = kid;
    return true;
}

static bool walk_kids(ywalk *w, ynode *n, const yaml_node_t *yn)
{
    if (yn->type == YAML_SEQUENCE_NODE) {
        for (const yaml_node_item_t *it = yn->data.sequence.items.start;
             it < yn->data.sequence.items.top; it++)
            if (!walk_kid(w, n, *it, 0))
                return false;
        return true;
    }
    for (const yaml_node_pair_t *pr = yn->data.mapping.pairs.start; pr < yn->data.mapping.pairs.top;
         pr++) {
        if (!walk_kid(w, n, pr->key, 0))
            return false;
        /* A repeated value is an alias, most likely on its key's line. */
        if (!walk_kid(w, n, pr->value, n->kids[n->nkids - 1]->line))
            return false;
    }
    return true;
}

static ynode *walk_collection(ywalk *w, const yaml_node_t *yn, size_t line)
{
    bool seq = yn->type == YAML_SEQUENCE_NODE;
    size_t count = seq ? (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start)
                       : 2 * (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
    ynode *n;
    bool ok;

    if (w->depth == PLAN_MAX_DEPTH) {
        plan_fail(w->c, line, "YAML nesting",
                  "lists and mappings are nested more than %d deep; a plan needs 4",
                  PLAN_MAX_DEPTH);
        return NULL;
    }
    if (!(n = calloc(1, sizeof *n)) || (count && !(n->kids = calloc(count, sizeof *n->kids)))) {
        free(n);
        plan_oom(w->c);
        return NULL;
    }
    n->kind = seq ? YN_SEQ : YN_MAP;
    n->line = line;
    w->depth++;
    ok = walk_kids(w, n, yn);
    w->depth--;
    if (!ok) {
        ynode_free(n);
        return NULL;
    }
    return n;
}

/* The node at index as a ynode; ref_line, if not 0, is the line to blame
 * should this reference to it be an alias. */
static ynode *walk_node(ywalk *w, int index, size_t ref_line)
{
    const yaml_node_t *yn = yaml_document_get_node(w->doc, index);
    size_t line;

    if (!yn) { /* libyaml never does this */
        plan_fail(w->c, 1, "YAML", "libyaml gave a node that is not in the document");
        return NULL;
    }
    line = yn->start_mark.line + 1;
    if (w->seen[index]) {
        yaml_alias_fail(w->c, ref_line ? ref_line : line);
        return NULL;
    }
    w->seen[index] = 1;
    if (!yaml_check_tag(w->c, yn, line))
        return NULL;
    switch (yn->type) {
    case YAML_SEQUENCE_NODE:
    case YAML_MAPPING_NODE:
        return walk_collection(w, yn, line);
    case YAML_SCALAR_NODE:
        return walk_scalar(w, yn, line);
    default:
        break;
    }
    plan_fail(w->c, line, "YAML", "libyaml gave a node of no known kind");
    return NULL;
}

/* The document's tree; *root NULL for an empty document. */
static bool walk_document(plan_ctx *c, yaml_document_t *doc, ynode **root)
{
    ywalk w = {.c = c, .doc = doc};
    size_t nnodes;

    *root = NULL;
    if (!yaml_document_get_root_node(doc))
        return true;
    nnodes = (size_t)(doc->nodes.top - doc->nodes.start);
    if (!(w.seen = calloc(nnodes + 1, 1)))
        return plan_oom(c);
    *root = walk_node(&w, 1, 0); /* the root is node 1 */
    free(w.seen);
    return *root != NULL;
}

/* After the plan's document the stream must end: a second load that gives
 * a document with a root node is a second document. */
static bool check_stream_end(plan_ctx *c, yaml_parser_t *parser)
{
    yaml_document_t doc;
    bool more;
    size_t line;

    if (!yaml_parser_load(parser, &doc))
        return yaml_load_fail(c, parser);
    more = yaml_document_get_root_node(&doc) != NULL;
    line = doc.start_mark.line + 1;
    yaml_document_delete(&doc);
    if (more)
        return plan_fail(c, line, "YAML document",
                         "the file holds a second document (after \"---\"); keep one plan per "
                         "file");
    return true;
}

/* Loads the text with libyaml and walks the document into ynodes. */
static bool load_tree(plan_ctx *c, yaml_parser_t *parser, ynode **root)
{
    yaml_document_t doc;
    bool ok;

    *root = NULL;
    if (!yaml_parser_load(parser, &doc))
        return yaml_load_fail(c, parser);
    ok = walk_document(c, &doc, root);
    yaml_document_delete(&doc);
    if (ok && !check_stream_end(c, parser))
        ok = false;
    if (ok && (!*root || ((*root)->kind == YN_SCALAR && (*root)->null)))
        ok = plan_fail(c, *root ? (*root)->line : 1, "plan",
                       "the file holds no plan; write at least \"name:\", \"source:\" and "
                       "\"tables:\"");
    if (!ok) {
        ynode_free(*root);
        *root = NULL;
    }
    return ok;
}

/* Parses the text into a tree of one document. NULL (with the error
 * written) on syntax errors, a second document, aliases, tags. */
ynode *ynode_read(plan_ctx *c)
{
    yaml_parser_t parser;
    ynode *root;

    if (!yaml_parser_initialize(&parser)) {
        plan_oom(c);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)c->yaml, c->len);
    load_tree(c, &parser, &root);
    yaml_parser_delete(&parser);
    return root;
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
