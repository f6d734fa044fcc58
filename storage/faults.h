/*
 * faults.h - the fault injection rules table (storage/faults.c): added and deleted by `postern
 * fault` (server/cli/fault.c), read by the server's rule cache (server/fault/fault.c). The rows
 * hold the rule as the operator gave it (struct fault_spec); checking it is
 * common/pure/fault.c's, on the way in and again on the way out.
 */
#ifndef POSTERN_STORAGE_FAULTS_H
#define POSTERN_STORAGE_FAULTS_H

#include <stdint.h>

#include "common/pure/fault.h"
#include "storage/store.h"

/* Adds a rule; *id_out gets its id. */
int store_fault_add(struct store *s, const struct fault_spec *spec, int64_t now_ms,
                    int64_t *id_out);
/* STORE_NOT_FOUND when there is no rule id. */
int store_fault_del(struct store *s, int64_t id);
/* Every rule in id order; the spec's strings are valid during the call only. */
typedef int (*store_fault_fn)(void *ctx, int64_t id, const struct fault_spec *spec);
int store_fault_list(struct store *s, store_fault_fn fn, void *ctx);
/* The table's version: max(id) and count(*); both change with every add and every delete. */
int store_fault_version(struct store *s, int64_t *max_id_out, int64_t *count_out);

#endif
