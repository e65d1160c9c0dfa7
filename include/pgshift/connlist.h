/* connlist.h: the open connections of a libuv server (control.c, http.c),
 * as an intrusive doubly linked list. A connection struct embeds a
 * conn_link as its first member, so a conn_link * converts back to it. */
#ifndef PGSHIFT_CONNLIST_H
#define PGSHIFT_CONNLIST_H

#include <stddef.h>

typedef struct conn_link {
    struct conn_link *prev, *next;
} conn_link;

typedef struct conn_list {
    conn_link *head;
    int n;
} conn_list;

static inline void conn_list_add(conn_list *l, conn_link *x)
{
    x->prev = NULL;
    x->next = l->head;
    if (l->head)
        l->head->prev = x;
    l->head = x;
    l->n++;
}

static inline void conn_list_remove(conn_list *l, conn_link *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

#endif
