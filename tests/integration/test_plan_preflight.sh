#!/usr/bin/env bash
# `pgshift plan`, the dry run: a good plan exits 0 and changes nothing on the
# server; every blocking finding exits 3 with a BLOCK line that names the
# problem and its fix (one scenario per plan, each asserted to be the only
# blocking problem); key resolution, dependent objects, command-line errors
# (exit 2, one-line message) and password redaction.
source "$(dirname "$0")/lib/common.sh"
# A backend flushes its statistics when it exits, before it leaves
# pg_stat_activity: none but the asking one left means all are flushed.
OTHER_BACKENDS="SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"

# write_plan NAME [SOURCE_CONNINFO] < table lines: $WORK/NAME.yaml
write_plan() {
  {
    echo "name: $1"
    echo "source: \"${2:-dbname=$PGDATABASE}\""
    echo "tables:"
    cat
  } >"$WORK/$1.yaml"
}

# run_plan NAME [ARGS...]: `pgshift plan` on $WORK/NAME.yaml; sets RC, OUT, ERR.
run_plan() {
  local n=$1
  shift
  "$PGSHIFT" plan --plan "$WORK/$n.yaml" "$@" >"$WORK/$n.out" 2>"$WORK/$n.err"
  RC=$?
  OUT=$WORK/$n.out ERR=$WORK/$n.err
}

show() { echo "exit $RC; stdout: $(grep -E 'BLOCK|warn|blocking' "$OUT" | head -8); stderr: $(head -3 "$ERR")"; }

# expect_ok NAME: exit 0, "0 blocking problem(s)".
expect_ok() {
  run_plan "$1"
  [ "$RC" = 0 ] || fail "$1: $(show)"
  grep -q '^0 blocking problem(s), [0-9]* warning(s): ready to run$' "$OUT" || fail "$1: no '0 blocking' summary: $(show)"
}

# expect_block NAME PATTERN: exit 3, exactly one blocking problem, and a BLOCK
# line containing PATTERN (fixed string) that carries a fix.
expect_block() {
  run_plan "$1"
  [ "$RC" = 3 ] || fail "$1: expected exit 3: $(show)"
  grep -q '^1 blocking problem(s), ' "$OUT" || fail "$1: expected exactly 1 blocking problem: $(show)"
  local line
  line=$(grep -F -- "$2" "$OUT") || fail "$1: no line containing: $2; $(show)"
  case "$line" in
    "  BLOCK  "*"fix: "*) ;;
    *) fail "$1: the line is not a BLOCK with a fix: $line" ;;
  esac
  [ ! -s "$ERR" ] || fail "$1: unexpected stderr: $(head -3 "$ERR")"
}

# snapshot: everything a run would create, and a digest of pg_class.
snapshot() {
  sql "SELECT (SELECT count(*) FROM pg_replication_slots) || ' slots, '
           || (SELECT count(*) FROM pg_publication) || ' publications, '
           || (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift') || ' pgshift schemas, '
           || coalesce(to_regclass('good_part')::text, 'no good_part') || ', '
           || (SELECT md5(string_agg(oid || ':' || relname || ':' || relkind::text, ',' ORDER BY oid)) FROM pg_class)"
}

sqlf - <<'SQL' || fail "setup"
-- a good plan: a user-created target and a partition-spec target
CREATE TABLE good (id int PRIMARY KEY, v text);
INSERT INTO good SELECT i, 'v' || i FROM generate_series(1, 100) i;
CREATE TABLE good_new (LIKE good INCLUDING ALL);
CREATE TABLE good2 (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, v text);
INSERT INTO good2 SELECT i, timestamptz '2024-01-01' + i * interval '6 hours', 'v' FROM generate_series(1, 200) i;
-- keys
CREATE TABLE nopk (id int, v text);
CREATE TABLE nopk_new (id int, v text);
CREATE TABLE rnothing (id int PRIMARY KEY, v text);
ALTER TABLE rnothing REPLICA IDENTITY NOTHING;
CREATE TABLE rnothing_new (LIKE rnothing INCLUDING ALL);
CREATE TABLE rfull (id int NOT NULL, v text);
ALTER TABLE rfull REPLICA IDENTITY FULL;
CREATE TABLE rfull_new (id int NOT NULL, v text);
CREATE INDEX ON rfull_new (id);
CREATE TABLE ridx (id int PRIMARY KEY, code text NOT NULL, k2 int NOT NULL, v text);
CREATE UNIQUE INDEX ridx_ck ON ridx (code, k2);
ALTER TABLE ridx REPLICA IDENTITY USING INDEX ridx_ck;
CREATE TABLE ridx_new (LIKE ridx INCLUDING ALL);
CREATE TABLE ridx_gone (id int PRIMARY KEY, code text NOT NULL);
CREATE UNIQUE INDEX ridx_gone_code ON ridx_gone (code);
ALTER TABLE ridx_gone REPLICA IDENTITY USING INDEX ridx_gone_code;
DROP INDEX ridx_gone_code;  -- relreplident stays 'i': the table acts as NOTHING
CREATE TABLE ridx_gone_new (LIKE ridx_gone INCLUDING ALL);
CREATE TABLE fpk (a int, b int, v text, PRIMARY KEY (b, a));
ALTER TABLE fpk REPLICA IDENTITY FULL;
CREATE TABLE fpk_new (LIKE fpk INCLUDING ALL);
-- columns
CREATE TABLE cols (id int PRIMARY KEY, a int, b text, "Mixed Case" text);
CREATE TABLE cols_type (id int PRIMARY KEY, a bigint, b text, "Mixed Case" text);
CREATE TABLE cols_badtype (id int PRIMARY KEY, a int, b int, "Mixed Case" text);
CREATE TABLE cols_miss (id int PRIMARY KEY, a int, b text);
CREATE TABLE cols_nn (id int PRIMARY KEY, a int, b text NOT NULL, "Mixed Case" text);
CREATE TABLE cols_full (LIKE cols INCLUDING ALL);
INSERT INTO cols_full VALUES (1, 1, 'x', 'y');
-- partitions: a user-created partitioned target without DEFAULT
CREATE TABLE ev (id int PRIMARY KEY, ts date, v text);
INSERT INTO ev SELECT i, date '2024-01-01' + i, 'x' FROM generate_series(1, 90) i;
INSERT INTO ev VALUES (1000, NULL, 'no date');
CREATE TABLE ev_user (id int NOT NULL, ts date, v text) PARTITION BY RANGE (ts);
CREATE TABLE ev_user_jan PARTITION OF ev_user FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE ev_user_feb PARTITION OF ev_user FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE INDEX ON ev_user (id);
-- NULL partition keys: without a primary key (unique replica identity index), and with one
CREATE TABLE nk (code text NOT NULL, ts date, v text);
CREATE UNIQUE INDEX nk_code ON nk (code);
ALTER TABLE nk REPLICA IDENTITY USING INDEX nk_code;
INSERT INTO nk SELECT 'c' || i, CASE WHEN i % 10 = 0 THEN NULL ELSE date '2024-01-01' + i END, 'x'
  FROM generate_series(1, 30) i;
CREATE TABLE nkpk (id int PRIMARY KEY, ts date);
INSERT INTO nkpk SELECT i, CASE WHEN i <= 2 THEN NULL ELSE date '2024-01-01' + i END FROM generate_series(1, 20) i;
-- a role without REPLICATION that owns its tables
CREATE ROLE app LOGIN;
GRANT CREATE ON DATABASE postgres TO app;
CREATE TABLE owned (id int PRIMARY KEY, v text);
CREATE TABLE owned_new (LIKE owned INCLUDING ALL);
ALTER TABLE owned OWNER TO app;
ALTER TABLE owned_new OWNER TO app;
-- dependents
CREATE TABLE dep (id serial PRIMARY KEY, v text);
CREATE TABLE dep_new (id int PRIMARY KEY, v text);
CREATE VIEW dep_view AS SELECT id, v FROM dep;
CREATE TABLE dep_child (id int PRIMARY KEY, dep_id int CONSTRAINT dep_child_fk REFERENCES dep (id));
CREATE FUNCTION dep_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER dep_audit BEFORE INSERT ON dep FOR EACH ROW EXECUTE FUNCTION dep_trg();
CREATE ROLE reader;
GRANT SELECT ON dep TO reader;
SQL

# ---- a good plan: exit 0, and nothing changes --------------------------------
write_plan good <<'Y'
  - {source: good, target: good_new}
  - source: good2
    target: good_part
    partition: {by: range (created_at), interval: 1 month, default: true}
Y
before=$(snapshot) || fail "snapshot"
case "$before" in "0 slots, 0 publications, 0 pgshift schemas, no good_part, "*) ;; *) fail "unexpected start: $before" ;; esac
expect_ok good
grep -qF 'target "public"."good_part" will be created: LIKE the source, PARTITION BY RANGE (created_at), one partition per 1 month, with a DEFAULT partition' "$OUT" ||
  fail "good: the partition-spec target is not announced"
grep -qF '1. publication pgshift_good FOR TABLE "public"."good", "public"."good2"' "$OUT" || fail "good: steps not listed"
[ ! -s "$ERR" ] || fail "good: stderr: $(cat "$ERR")"
pass "a good plan exits 0 with '0 blocking problem(s)'"
# ---- row estimates come from the statistics, never from a scan -------------
# A never-analyzed table (reltuples -1) is reported as unknown; before, the
# plan ran SELECT count(*) on every such table under 256 MB.
sqlf - <<'SQL' || fail "setup rows_unk"
CREATE TABLE rows_unk (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
INSERT INTO rows_unk SELECT i, 'x' FROM generate_series(1, 1000) i;
CREATE TABLE rows_unk_new (LIKE rows_unk INCLUDING ALL);
SQL
write_plan rows_unk <<<'  - {source: rows_unk, target: rows_unk_new}'
expect_ok rows_unk
grep -qF 'row count unknown (never analyzed; ANALYZE "public"."rows_unk" gives an estimate' "$OUT" ||
  fail "rows_unk: $(grep -iE 'rows|unknown' "$OUT" | head -3)"
grep -qF 'about 0 rows (plus the rows of 1 never-analyzed table(s))' "$OUT" || fail "rows_unk: $(grep 'copy 1 table' "$OUT")"
# Rows read by sequential scans: the setup read none (its primary key's
# build, which counts as a scan, ran on the empty table). After the plan's
# backend has exited, one scan of our own (1000 rows) marks the point up to
# which the statistics must have arrived: on 14 the collector takes them
# asynchronously and a backend may read a snapshot up to 500 ms old.
wait_for 10 "the plan's backend to exit (and flush its statistics)" sql_is 0 "$OTHER_BACKENDS"
sql "SELECT count(*) FROM rows_unk" >/dev/null || fail "rows_unk: marker scan"
read_rows="SELECT seq_tup_read >= 1000 FROM pg_stat_user_tables WHERE relname = 'rows_unk'"
wait_for 10 "the marker scan in the statistics" sql_is t "$read_rows"
[ "$(sql "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'rows_unk'")" = 1000 ] ||
  fail "rows_unk: the plan scanned the table ($(sql "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'rows_unk'") rows read by sequential scans, 1000 of them the test's own)"
sql "ANALYZE rows_unk" || fail "analyze rows_unk"
expect_ok rows_unk
grep -qE 'ok +about 1000 rows, ' "$OUT" || fail "rows_unk after ANALYZE: $(grep -i rows "$OUT" | head -3)"
sql "DROP TABLE rows_unk, rows_unk_new" || fail "drop rows_unk"
pass "never-analyzed table: row count unknown, not counted (no scan); after ANALYZE the estimate"

after=$(snapshot) || fail "snapshot"
[ "$after" = "$before" ] || fail "plan changed the server: before '$before', after '$after'"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")" = 0 ] || fail "a slot exists"
[ "$(sql "SELECT count(*) FROM pg_publication")" = 0 ] || fail "a publication exists"
[ "$(sql "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'")" = 0 ] || fail "schema pgshift exists"
[ -z "$(sql "SELECT to_regclass('good_part')")" ] || fail "the partition-spec target was created"
[ "$(sql "SELECT count(*) FROM good_new")" = 0 ] || fail "rows were copied"
pass "plan creates no slot, publication, pgshift schema or target (catalogs identical)"

# ---- blocking problems: exit 3, one BLOCK line each, with its fix ------------
write_plan b_nopk <<<'  - {source: nopk, target: nopk_new}'
expect_block b_nopk '"public"."nopk" has no primary key and REPLICA IDENTITY DEFAULT'
grep -qF 'fix: add a primary key, or REPLICA IDENTITY USING INDEX' "$OUT" || fail "b_nopk: fix text"
pass "no primary key, REPLICA IDENTITY DEFAULT: BLOCK"

write_plan b_nothing <<<'  - {source: rnothing, target: rnothing_new}'
expect_block b_nothing '"public"."rnothing" has REPLICA IDENTITY NOTHING'
grep -qF 'fix: ALTER TABLE "public"."rnothing" REPLICA IDENTITY DEFAULT' "$OUT" || fail "b_nothing: fix text"
pass "REPLICA IDENTITY NOTHING: BLOCK"

# No key but REPLICA IDENTITY FULL: accepted (the whole row finds it), with
# a warning about the cost and how to avoid it.
write_plan ok_full <<<'  - {source: rfull, target: rfull_new}'
expect_ok ok_full
grep -qF 'rows identified by the whole row (REPLICA IDENTITY FULL, no key)' "$OUT" || fail "ok_full: how rows are found: $(show)"
grep -qF 'list unique NOT NULL columns as `key:` in the plan' "$OUT" || fail "ok_full: fix text"
write_plan ok_fullkey <<<'  - {source: rfull, target: rfull_new, key: [id]}'
expect_ok ok_fullkey
grep -qF 'ok     rows identified by plan key (id); replica identity full' "$OUT" || fail "ok_fullkey: $(grep identified "$OUT")"
pass "REPLICA IDENTITY FULL without primary key: ok by the whole row (with a warning), or by key: [id]"

write_plan b_ridx_gone <<<'  - {source: ridx_gone, target: ridx_gone_new}'
expect_block b_ridx_gone '"public"."ridx_gone" has REPLICA IDENTITY USING INDEX but that index no longer exists'
pass "REPLICA IDENTITY USING INDEX whose index was dropped: BLOCK"

# Another type the server assigns (int -> bigint): mapped by itself.
write_plan ok_type <<<'  - {source: cols, target: cols_type}'
expect_ok ok_type
grep -qF 'column a (bigint) <- "a" (same name, converted by the server); reads a' "$OUT" || fail "ok_type: $(show)"
pass "target column of another type the server converts (int -> bigint): mapped by itself"

# One it does not (text -> int): BLOCK, with the mapping to write.
write_plan b_type <<<'  - {source: cols, target: cols_badtype}'
expect_block b_type 'column "b" is text on the source and integer on target "public"."cols_badtype", and the server does not convert one to the other'
grep -qF 'fix: map it in the plan, e.g. "columns: {b: "b"::integer}"' "$OUT" || fail "b_type: $(show)"
pass "target column of a type the server does not assign: BLOCK"

write_plan b_miss <<<'  - {source: cols, target: cols_miss}'
expect_block b_miss 'target "public"."cols_miss" has no column "Mixed Case"; fix: ALTER TABLE "public"."cols_miss" ADD COLUMN "Mixed Case" text'
pass "target missing a column: BLOCK (the fix quotes the column name)"

write_plan b_nn <<<'  - {source: cols, target: cols_nn}'
expect_block b_nn 'column "b" is NOT NULL on target "public"."cols_nn" but nullable on the source; fix: ALTER TABLE "public"."cols_nn" ALTER COLUMN "b" DROP NOT NULL'
pass "target NOT NULL where the source is nullable: BLOCK"

write_plan b_full_target <<<'  - {source: cols, target: cols_full}'
expect_block b_full_target 'target "public"."cols_full" already holds rows; the copy would duplicate them; fix: TRUNCATE "public"."cols_full"'
pass "target not empty: BLOCK"

outside=$(sql "SELECT count(*) FROM ev WHERE ts IS NULL OR ts < '2024-01-01' OR ts >= '2024-03-01'")
[ "$outside" = 32 ] || fail "setup: $outside rows outside, expected 32"
write_plan b_cover <<<'  - {source: ev, target: ev_user}'
expect_block b_cover "32 rows of \"public\".\"ev\" have no partition in \"public\".\"ev_user\" (2 partitions, no DEFAULT); fix: create the missing partitions or a DEFAULT partition"
sql "CREATE TABLE ev_user_mar PARTITION OF ev_user FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')" || fail "add partition"
expect_block b_cover "1 rows of \"public\".\"ev\" have no partition in \"public\".\"ev_user\" (3 partitions, no DEFAULT)"
sql "CREATE TABLE ev_user_def PARTITION OF ev_user DEFAULT" || fail "add default partition"
expect_ok b_cover
grep -qF 'target has 4 partitions including a DEFAULT one' "$OUT" || fail "b_cover: default partition not reported"
pass "rows outside every partition of a user-created target: BLOCK with the count; ok once covered"

write_plan b_nullkey <<'Y'
  - source: nk
    target: nk_part
    partition: {by: range (ts), interval: 1 month}
Y
expect_block b_nullkey '3 rows of "public"."nk" have NULL in partition column "ts"; fix: add `default: true` to the partition spec'
write_plan ok_nullkey <<'Y'
  - source: nk
    target: nk_part
    partition: {by: range (ts), interval: 1 month, default: true}
Y
expect_ok ok_nullkey
pass "NULL partition keys without default: true: BLOCK; ok with it"

write_plan b_nullpk <<'Y'
  - source: nkpk
    target: nkpk_part
    partition: {by: range (ts), interval: 1 month, default: true}
Y
expect_block b_nullpk '2 rows of "public"."nkpk" have NULL in partition column "ts", which the target'"'"'s primary key'
pass "NULL partition keys the target's primary key cannot hold: BLOCK even with default: true"

write_plan b_notarget <<<'  - {source: good, target: nothere_new}'
expect_block b_notarget 'target table nothere_new does not exist; fix: create it, or add a `partition:` block'
pass "target that does not exist, without partition spec: BLOCK"

write_plan b_nosource <<<'  - {source: public.nosuch, target: good_new}'
expect_block b_nosource 'source table public.nosuch does not exist'
pass "source table missing: BLOCK"

write_plan b_norepl "dbname=$PGDATABASE user=app" <<<'  - {source: owned, target: owned_new}'
expect_block b_norepl 'role app may not replicate; fix: ALTER ROLE app REPLICATION'
sql "ALTER ROLE app REPLICATION" || fail "alter role"
expect_ok b_norepl
grep -qF 'ok     role app may replicate' "$OUT" || fail "b_norepl: role not reported"
pass "role without REPLICATION: BLOCK; ok once granted"

write_plan b_interval <<'Y'
  - source: good2
    target: good2_part
    partition: {by: range (created_at), interval: fortnight}
Y
expect_block b_interval 'partition.interval "fortnight" is not a positive interval; fix: write e.g. "1 month"'
sed -i 's/fortnight/-1 month/' "$WORK/b_interval.yaml"
expect_block b_interval 'partition.interval "-1 month" is not a positive interval'
sed -i 's/-1 month/1 minute/' "$WORK/b_interval.yaml"
expect_block b_interval 'partitions for the existing rows of "public"."good2" (at most 2000); fix: choose a larger interval'
pass "partition.interval not a valid interval, or one making too many partitions: BLOCK"

# ---- keys that are fine ------------------------------------------------------
write_plan ok_keys <<'Y'
  - {source: ridx, target: ridx_new}
  - {source: fpk, target: fpk_new}
Y
expect_ok ok_keys
grep -qF 'ok     rows identified by replica identity index (code, k2); replica identity using index' "$OUT" ||
  fail "ridx: $(grep identified "$OUT")"
grep -qF 'ok     rows identified by primary key (b, a); replica identity full' "$OUT" ||
  fail "fpk: $(grep identified "$OUT")"
pass "REPLICA IDENTITY USING INDEX and FULL + primary key: exit 0, the right key columns"

# ---- dependent objects -------------------------------------------------------
write_plan deps <<<'  - {source: dep, target: dep_new}'
expect_ok deps
for line in \
  'cutover rename: "public"."dep" -> public.dep_old, "public"."dep_new" -> "public"."dep"' \
  'cutover view public.dep_view: re-created to read the new table' \
  'cutover foreign key dep_child_fk on public.dep_child: re-created to reference the new table (NOT VALID, then validated)' \
  'cutover trigger dep_audit: re-created on the new table' \
  "cutover sequence dep_id_seq (column id): the new table's column takes the source's default and owns the sequence" \
  'cutover grant reader: SELECT: copied to the new table'; do
  grep -qxF "  $line" "$OUT" || fail "deps: missing '$line'; got: $(grep '  cutover ' "$OUT")"
done
[ "$(grep -c '^  cutover ' "$OUT")" = 6 ] || fail "deps: expected 6 cutover lines: $(grep '  cutover ' "$OUT")"
grep -qF 'cutover rename: "public"."good" -> public.good_old' "$WORK/good.out" || fail "good: rename not announced"
# What the cutover cannot carry is a warning now (the copy may start) that names the fix.
sql "CREATE RULE dep_rule AS ON DELETE TO dep DO INSTEAD NOTHING" || fail "rule"
expect_ok deps
grep -qF 'warn   the cutover would refuse: rule dep_rule on "public"."dep" cannot be carried to the new table; fix: drop it (and re-create it after the cutover), or leave_behind: [dep_rule]' "$OUT" ||
  fail "deps: rule not flagged: $(grep -i rule "$OUT")"
write_plan deps_lb <<<'  - {source: dep, target: dep_new, leave_behind: [dep_rule, dep_audit]}'
expect_ok deps_lb
grep -qxF '  cutover rule dep_rule: left behind on the old table' "$OUT" || fail "deps_lb: $(grep -i rule "$OUT")"
grep -qxF '  cutover trigger dep_audit: left behind on the old table' "$OUT" || fail "deps_lb: $(grep -i audit "$OUT")"
sql "DROP RULE dep_rule ON dep" || fail "drop rule"
pass "view, foreign key, trigger, grant, serial sequence and rename listed with what the cutover does; a rule is flagged unless left behind"

# ---- command line ------------------------------------------------------------
# cli CMD...: runs pgshift; sets RC, $WORK/cli.out, $WORK/cli.err
cli() { "$PGSHIFT" "$@" >"$WORK/cli.out" 2>"$WORK/cli.err"; RC=$?; }
# one_error PATTERN: exit 2, nothing on stdout, stderr's first line is PATTERN (regex)
one_error() {
  [ "$RC" = 2 ] || fail "expected exit 2, got $RC: $(head -2 "$WORK/cli.err")"
  [ ! -s "$WORK/cli.out" ] || fail "stdout not empty: $(head -2 "$WORK/cli.out")"
  head -1 "$WORK/cli.err" | grep -qE "^$1\$" || fail "stderr line 1 is '$(head -1 "$WORK/cli.err")', expected /$1/"
}
cli plan
one_error 'pgshift plan: --plan FILE is required'
cli plan --plan
one_error 'pgshift plan: option --plan needs a value'
cli plan --plan "$WORK/good.yaml" --bogus
one_error 'pgshift plan: unknown option --bogus'
cli plan --plan "$WORK/good.yaml" -xq
one_error 'pgshift plan: unknown option -x'
cli plan --plan "$WORK/good.yaml" --confirm
one_error 'pgshift plan: option --confirm does not apply here'
pass "missing --plan, missing value, unknown option: exit 2 and the error on the first line"

cp "$WORK/good.yaml" "$WORK/badkey.yaml"
echo "colour: blue" >>"$WORK/badkey.yaml"
cli plan --plan "$WORK/badkey.yaml"
one_error "pgshift: $WORK/badkey.yaml:[0-9]+: colour: unknown key; the keys here are .*"
[ "$(wc -l <"$WORK/cli.err")" = 1 ] || fail "unknown key: more than one line: $(cat "$WORK/cli.err")"
cli plan --plan "$WORK/nonexistent.yaml"
one_error "pgshift: $WORK/nonexistent.yaml: cannot open the plan: .*"
[ "$(wc -l <"$WORK/cli.err")" = 1 ] || fail "missing file: more than one line: $(cat "$WORK/cli.err")"
pass "plan file with an unknown key, nonexistent plan file: exit 2, one line"

cli bogus
[ "$RC" = 2 ] || fail "pgshift bogus exited $RC"
[ ! -s "$WORK/cli.out" ] || fail "pgshift bogus wrote to stdout"
head -1 "$WORK/cli.err" | grep -qxF 'pgshift: unknown command "bogus"' || fail "bogus: $(head -1 "$WORK/cli.err")"
grep -q '^Usage: pgshift COMMAND' "$WORK/cli.err" || fail "bogus: no usage on stderr"
cli
[ "$RC" = 2 ] && grep -q '^Usage: pgshift COMMAND' "$WORK/cli.err" || fail "pgshift without a command: exit $RC"
pass "unknown command: exit 2 with usage on stderr"

cli --help
[ "$RC" = 0 ] || fail "--help exited $RC"
grep -q '^Usage: pgshift COMMAND' "$WORK/cli.out" || fail "--help: no usage on stdout"
for c in plan run status abort; do grep -qE "^  $c +" "$WORK/cli.out" || fail "--help does not list $c"; done
[ ! -s "$WORK/cli.err" ] || fail "--help wrote to stderr"
cli plan --help
[ "$RC" = 0 ] || fail "plan --help exited $RC"
grep -q '^Usage: pgshift plan --plan FILE' "$WORK/cli.out" || fail "plan --help: no usage"
grep -q 'It changes nothing on the server' "$WORK/cli.out" || fail "plan --help: text"
pass "--help and plan --help exit 0 with usage on stdout"

cli --version
[ "$RC" = 0 ] || fail "--version exited $RC"
want='[0-9]+\.[0-9]+\.[0-9]+'
if [ -n "${PGSHIFT_SOURCE_DIR:-}" ]; then
  want=$(sed -nE 's/^project\(pgshift VERSION ([0-9.]+).*/\1/p' "$PGSHIFT_SOURCE_DIR/CMakeLists.txt" | sed 's/\./\\./g')
fi
grep -qxE "pgshift $want" "$WORK/cli.out" || fail "--version printed '$(cat "$WORK/cli.out")', expected /pgshift $want/"
pass "--version prints the version ($(cat "$WORK/cli.out"))"

# ---- a nullable partition column with no NULL yet: a warning with the fix ----
sql "CREATE TABLE np (id bigint PRIMARY KEY, created_at timestamptz, v text);
     INSERT INTO np SELECT i, timestamptz '2025-01-01' + i * interval '1 hour', 'v' FROM generate_series(1, 100) i" || fail "np"
write_plan np <<<'  - {source: np, target: np_part, partition: {by: range (created_at), interval: 1 month}}'
expect_ok np
grep -qF 'warn   partition column "created_at" of "public"."np" is nullable: a row written with NULL there during the migration cannot enter the target (its primary key includes the column) and stops the apply; fix: ALTER TABLE "public"."np" ALTER COLUMN "created_at" SET NOT NULL (no row is NULL now)' "$OUT" ||
  fail "np: no warning: $(grep -i null "$OUT")"
pass "a nullable partition column without NULLs: exit 0 with a warning naming the fix"

# ---- passwords never printed (trust auth accepts any password) --------------
write_plan pw "dbname=$PGDATABASE password=secret123" <<<'  - {source: good, target: good_new}'
run_plan pw --log-level debug
[ "$RC" = 0 ] || fail "pw: $(show)"
grep -qF "(source: password=******** dbname=$PGDATABASE)" "$OUT" || fail "pw: redacted conninfo not shown: $(head -1 "$OUT")"
# A password in a plan others may read: libpq's .pgpass warning, adapted.
PW_WARN="plan file $WORK/pw.yaml holds a password and has group or world access; permissions should be u=rw (0600) or less"
chmod 644 "$WORK/pw.yaml"
run_plan pw
[ "$RC" = 0 ] && grep -qF "$PW_WARN" "$ERR" || fail "pw 0644: no warning: $(show)"
chmod 600 "$WORK/pw.yaml"
run_plan pw
[ "$RC" = 0 ] && ! grep -q "group or world access" "$ERR" || fail "pw 0600: $(show)"
chmod 644 "$WORK/good.yaml"
run_plan good
! grep -q "group or world access" "$ERR" || fail "good 0644, no password: warned: $(show)"
pass "a plan holding a password with group/world access: warned (not at 0600, not without a password)"
run_plan pw --log-level debug
write_plan pw_block "dbname=$PGDATABASE password=secret123" <<<'  - {source: nopk, target: nopk_new}'
run_plan pw_block --log-level debug
[ "$RC" = 3 ] || fail "pw_block: $(show)"
write_plan pw_uri "postgresql://postgres:secret123@/$PGDATABASE?host=$PGHOST&port=$PGPORT" <<<'  - {source: good, target: good_new}'
run_plan pw_uri --log-level debug
[ "$RC" = 0 ] || fail "pw_uri: $(show)"
grep -qF '(source: user=postgres password=******** dbname=' "$OUT" || fail "pw_uri: $(head -1 "$OUT")"
write_plan pw_fail "dbname=nosuchdb password=secret123" <<<'  - {source: good, target: good_new}'
run_plan pw_fail --log-level debug
[ "$RC" = 1 ] || fail "pw_fail: expected exit 1 (cannot connect): $(show)"
grep -q 'cannot connect to the source database' "$ERR" || fail "pw_fail: $(cat "$ERR")"
for n in pw pw_block pw_uri pw_fail; do
  ! grep -q secret123 "$WORK/$n.out" "$WORK/$n.err" || fail "$n: the password was printed: $(grep secret123 "$WORK/$n.out" "$WORK/$n.err")"
done
pass "a password in the conninfo never appears in the output or on stderr"

after=$(snapshot) || fail "snapshot"
case "$after" in "0 slots, 0 publications, 0 pgshift schemas, no good_part, "*) ;; *) fail "plans changed the server: $after" ;; esac
pass "after every plan above: still no slot, publication or pgshift schema"

# A server that accepts the connection and never answers (its postmaster
# stopped with SIGSTOP: the kernel still completes the TCP handshake): plan
# gives up after the default connect_timeout (10 s) instead of hanging.
write_plan silent "host=127.0.0.1 port=$PGPORT dbname=$PGDATABASE" <<<"  - {source: public.users, target: public.users_new}"
postmaster=$(head -1 "$PGSHIFT_TEST_PGDATA/postmaster.pid")
t0=$(date +%s)
kill -STOP "$postmaster"
PGCONNECT_TIMEOUT='' timeout 60 "$PGSHIFT" plan --plan "$WORK/silent.yaml" >"$WORK/silent.out" 2>"$WORK/silent.err"
RC=$?
kill -CONT "$postmaster"
took=$(($(date +%s) - t0))
[ "$RC" != 124 ] || fail "plan against a server that never answers still waited after 60 s"
[ "$RC" != 0 ] || fail "plan against a server that never answers exited 0"
grep -qi "timeout expired" "$WORK/silent.out" "$WORK/silent.err" ||
  fail "no timeout in the message: $(cat "$WORK/silent.out" "$WORK/silent.err" | head -5)"
[ "$took" -ge 9 ] || fail "gave up after $took s, before the 10 s default"
pass "a server that never answers: plan gives up after $took s (connect_timeout 10 s by default), exit $RC"
finish
