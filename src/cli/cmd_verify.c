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
    "snapshot is taken, then goes on (each hold lasts milliseconds, at most 60 s;\n"
    "the application is never blocked). A correct migration reports no difference\n"
    "under any write load. Without a live run, the two sides are read as they\n"
    "are, and the report says that rows changed since the last applied commit show\n"
    "as differences. After the cutover, each live table is compared with its\n"
    "<table>_old.\n\n"
    "Tables are walked in key order in chunks of 20000 rows, each chunk hashed on\n"
    "both servers (count and XOR of 64-bit row hashes); only the chunks that differ\n"
    "are narrowed to their rows, and only their keys and hashes leave the servers.\n"
    "Tables without a key are compared as multisets of rows.\n\n"
    "Options:\n"
    "  --plan FILE   the migration plan (YAML)\n"
    "  --table T     only this source table (schema.name or name)\n"
    "  --json        one JSON object: lsn, consistent, note, and per table: table,\n"
    "                rows_source, rows_target, missing, extra, different, samples\n"
    "                (up to 20: kind and key as an object of column -> value)\n"
    "  --repair      rewrite the rows that differ from the source, then verify\n"
    "                again: the live run holds at a fresh LSN while every differing\n"
    "                row is deleted from the target and inserted as the source has\n"
    "                it at that LSN, in one transaction; the changes after it then\n"
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
