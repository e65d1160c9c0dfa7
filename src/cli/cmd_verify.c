/* cmd_verify.c: `pgshift verify` (verify.h). */
#include "pgshift/cli.h"
#include "pgshift/cli_common.h"
#include "pgshift/migration.h"
#include "pgshift/verify.h"

#include <stdio.h>
#include <unistd.h>

static const char usage[] =
    "Usage: pgshift verify --plan FILE [--table T] [--json] [--repair]\n\n"
    "Compares every source table of the plan with its target and names the rows\n"
    "that differ: missing (in the source, not in the target), extra (in the\n"
    "target only) and different (same key, other values).\n\n"
    "While `pgshift run` streams (the usual case, the application writing), both\n"
    "sides are read as of one source LSN: the run commits what it applied and\n"
    "holds for a moment while a temporary slot exports a source snapshot, then\n"
    "applies exactly up to that snapshot's LSN and holds again while the target's\n"
    "snapshot is taken, then goes on (milliseconds; the first hold lasts longer\n"
    "while a transaction is open on the source, never over 60 s; the application\n"
    "is never blocked). A correct migration reports no difference\n"
    "under any write load. Without a live run, the two sides are read as they\n"
    "are, and the report says that rows changed since the last applied commit show\n"
    "as differences. After the cutover, each live table is compared with its\n"
    "<table>_old.\n\n"
    "How (plan `verify:`):\n"
    "  method: scan   one pass per side, source and target at once: per bucket of\n"
    "                 the key's hash, the count and XOR of 64-bit row hashes; only\n"
    "                 buckets that differ are narrowed to rows (keys and hashes\n"
    "                 only leave the servers). About the cost of hashing each\n"
    "                 whole table; each side holds one snapshot for its pass.\n"
    "  method: walk   key ranges of chunk_rows (20000) in key order, a fresh\n"
    "                 consistent point whenever the snapshots are older than\n"
    "                 max_snapshot_age (5min); slower where the key is not in the\n"
    "                 heap's order (a uuid key), but bounded on any table size.\n"
    "  method: auto   (default) scan when the source table reads within\n"
    "                 max_snapshot_age, else walk.\n"
    "  max_rate: N    rows per second read on each side (walk); `pgshift pause`\n"
    "                 holds a walk too, until `pgshift resume`.\n"
    "Tables without a key are compared as multisets of rows. A table with a\n"
    "column mapping (columns: in the plan) is compared with the mapped source:\n"
    "each target column against its expression over the source row, keys\n"
    "named as the target has them (refused during a rollback window).\n"
    "A verify that was\n"
    "interrupted resumes where it stopped (the next range of walk, or the next\n"
    "table) when run again on the same tables. The result is kept\n"
    "in the state: `pgshift status` shows the last verify, and `cutover: {verify:\n"
    "true}` refuses the cutover until every table has an identical verify at one\n"
    "LSN since the copy.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --table T     only this source table (schema.name or name)\n"
    "  --json        one JSON object: lsn, consistent, note, and per table: table,\n"
    "                rows_source, rows_target, missing, extra, different, samples\n"
    "                (up to 20: kind and key as an object of column -> value)\n"
    "  --repair      rewrite the rows that differ from the source, then verify\n"
    "                again: the live run holds at a fresh LSN while every differing\n"
    "                row is deleted from the target and inserted as the source has\n"
    "                it at that LSN (mapped, for a table with columns:), in one\n"
    "                transaction; the changes after it then\n"
    "                apply on top (needs the live run; tables with a key)\n\n"
    "Exit codes: 0 identical, 4 differences found, 1 runtime failure, 2 usage or\n"
    "plan-file error.\n";

int cmd_verify(int argc, char **argv);

int cmd_verify(int argc, char **argv)
{
    cli_opts o;
    int rc;
    pgs_migration *m = cli_open(argc, argv, "json,table,repair", usage, &o, &rc);
    if (m == NULL)
        return rc;
    verify_opts vo = {
        .table = o.table, .json = o.json, .repair = o.repair, .progress = !o.json && isatty(2)};
    rc = verify_main(m, &vo);
    cli_close(m);
    return rc;
}
