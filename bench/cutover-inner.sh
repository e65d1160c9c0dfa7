#!/usr/bin/env bash
# bench/cutover-inner.sh: the runs of bench/cutover.sh, inside with-pg.sh.
set -euo pipefail
RUNS=${CUTOVER_RUNS:-5}
ROWS=${CUTOVER_ROWS:-200000}
RATE=${CUTOVER_RATE:-3000}
CLIENTS=${CUTOVER_CLIENTS:-8}
THREADS=${CUTOVER_THREADS:-2}
STEADY_S=${CUTOVER_STEADY_S:-15}
RELEASE_AT=${CUTOVER_RELEASE_AT:-analyzed} # analyzed | streaming
TARGET=${CUTOVER_TARGET:-created}          # created | operator
LOAD_S=${CUTOVER_LOAD_S:-60}
ROLLBACK=${CUTOVER_ROLLBACK:-0}             # 1: a rollback window, and `pgshift rollback` after the cutover
ROLLBACK_AFTER_S=${CUTOVER_ROLLBACK_AFTER_S:-12}
BASE_S=10 # the "normal" window: the BASE_S seconds before the first lock attempt
W=$(mktemp -d /tmp/pgshift-cutbench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$CUTOVER_RAW"
source "$(dirname "$0")/lib.sh"
out() { echo "$*" | tee -a "$CUTOVER_OUT"; }
q() { psql -XAtq -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
PGBENCH=$PGSHIFT_TEST_CLIENTBIN/pgbench

# Other PostgreSQL servers, tests or pgbench runs on the machine distort timings.
others() {
  local pm
  pm=$(ps -eo pid=,ppid=,comm= | awk '$3 == "postgres" {pg[$1] = 1; pp[$1] = $2} END {n = 0; for (p in pg) if (!(pp[p] in pg)) n++; print n}')
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $((pm - 1)) other postgres server(s), $(pgrep -c -x ctest || true) ctest"
}

out "pgshift cutover benchmark $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GB; $(psql -XAtc 'select version()' | cut -d, -f1); fsync on"
if [ "$RELEASE_AT" = streaming ]; then
  release="as soon as streaming starts (the copy's own WAL and the changes made during the copy still to apply)"
else
  release="after $STEADY_S s of streaming once the background ANALYZE is done"
fi
out "per run: $ROWS rows; $TARGET target; pgbench -R $RATE -c $CLIENTS -j $THREADS for $LOAD_S s; cutover released $release; normal window: the $BASE_S s before the first lock"
out "git: $(git -C "$(dirname "$0")/.." log -1 --format='%h %s' 2>/dev/null || echo '?')$(git -C "$(dirname "$0")/.." diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"

cat >"$W/analyze.py" <<'PY'
# analyze.py RUNDIR BASE_S: the client-side window of one run, as one JSON line.
import glob, json, re, sys
from datetime import datetime, timezone

rd, base_s = sys.argv[1], float(sys.argv[2])
# "rollback": the swap back after the cutover (its attempts follow the
# cutover's "cut over after" line and end with "swapped back after").
mode = sys.argv[3] if len(sys.argv) > 3 else "cutover"

def log_ts(line):
    return datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()

first_lock = cut_end = None
attempt_lines = []
seen_cut = mode == "cutover"
end_text = "cut over after" if mode == "cutover" else "swapped back after"
for line in open(f"{rd}/pgshift.log"):
    if not seen_cut:
        seen_cut = "cut over after" in line
        continue
    if re.search(r"cutover attempt \d+/\d+: locking", line) and cut_end is None:
        attempt_lines.append(log_ts(line))
        if first_lock is None:
            first_lock = log_ts(line)
    elif end_text in line and cut_end is None:
        cut_end = log_ts(line)
if first_lock is None or cut_end is None:
    sys.exit(f"{rd}/pgshift.log: no cutover start or end line")

tx = []  # (start = scheduled start, end, latency ms, schedule lag ms)
failed = 0
for f in glob.glob(f"{rd}/pgbench_log.*"):
    for line in open(f):
        p = line.split()
        if len(p) < 6:
            continue
        if not p[2].isdigit():  # "failed", "serialization", "deadlock", "skipped"
            failed += 1
            continue
        lat = int(p[2]) / 1e6
        end = int(p[4]) + int(p[5]) / 1e6
        lag = int(p[6]) / 1e3 if len(p) > 6 else 0.0
        tx.append((end - lat, end, lat * 1e3, lag))
tx.sort(key=lambda t: t[1])
if not tx:
    sys.exit(f"{rd}: no pgbench transactions logged")

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")

base = [t for t in tx if first_lock - base_s <= t[0] and t[1] < first_lock]
during = [t for t in tx if t[0] <= cut_end and t[1] >= first_lock]
after = [t for t in tx if t[0] > cut_end and t[1] <= cut_end + 5]
normal_worst = max(t[2] for t in base)
worst = max(t[2] for t in during) if during else 0.0
st = json.load(open(f"{rd}/status.json")).get("cutover", {}) if mode == "cutover" else {}
if mode == "rollback":  # the swap back's own figures, from its log line
    m = re.search(r"swapped back after (\d+) attempt\(s\): write-blocking window (\d+) ms \(lock wait (\d+) ms, "
                  r"fence reached in (\d+) ms, swap (\d+) ms\)", open(f"{rd}/pgshift.log").read())
    if m:
        st = dict(zip(("attempts", "write_block_ms", "lock_wait_ms", "fence_ms", "swap_ms"),
                      (int(x) for x in m.groups())))
at = st.get("at")
res = {
    "transactions": len(tx),
    "failed_in_log": failed,
    "load_tps": len(tx) / (tx[-1][1] - tx[0][1]),
    "base_tps": len(base) / base_s,
    "base_p50_ms": pct([t[2] for t in base], 0.50),
    "base_p99_ms": pct([t[2] for t in base], 0.99),
    "normal_worst_ms": normal_worst,
    "base_max_schedule_lag_ms": max(t[3] for t in base),
    "cutover_span_ms": (cut_end - first_lock) * 1e3,
    "during_n": len(during),
    "during_over_normal_worst": sum(1 for t in during if t[2] > normal_worst),
    "worst_during_ms": worst,
    "window_ms": worst - normal_worst,
    "after5s_max_ms": max((t[2] for t in after), default=float("nan")),
    "after5s_p99_ms": pct([t[2] for t in after], 0.99),
    "attempt_starts": [round((a - first_lock) * 1e3) for a in attempt_lines],
    "status_at": at,
}
for k in ("write_block_ms", "lock_wait_ms", "fence_ms", "applied_to_fence_ms", "swap_ms",
          "lock_held_ms", "attempts", "worst_failed_attempt_ms"):
    res[k] = st.get(k)
print(json.dumps(res))
PY

cat >"$W/summary.py" <<'PY'
# summary.py RESULTS.jsonl: a table per run and the medians.
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cols = [("run", "run", "{}"), ("tps", "load_tps", "{:.0f}"), ("failed", "failed", "{}"),
        ("normal p99", "base_p99_ms", "{:.1f}"), ("normal worst", "normal_worst_ms", "{:.1f}"),
        ("worst during", "worst_during_ms", "{:.1f}"), ("window", "window_ms", "{:.1f}"),
        ("cutover span", "cutover_span_ms", "{:.0f}"), ("next 5 s max", "after5s_max_ms", "{:.1f}"),
        ("pgshift write_block", "write_block_ms", "{:.1f}"), ("lock wait", "lock_wait_ms", "{:.1f}"),
        ("fence", "fence_ms", "{:.1f}"), ("swap", "swap_ms", "{:.1f}"), ("attempts", "attempts", "{}")]
def cell(r, k, f):
    v = r.get(k)
    return "-" if v is None else f.format(v)
print("| " + " | ".join(c[0] for c in cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(cell(r, k, f) for _, k, f in cols) + " |")
med = {k: statistics.median(r[k] for r in rows) for _, k, _ in cols[1:] if all(isinstance(r.get(k), (int, float)) for r in rows)}
med["run"] = "median"
print("| " + " | ".join(cell(med, k, f) for _, k, f in cols) + " |")
print("(ms; window = worst during - normal worst; cutover span = first lock attempt to commit, from pgshift's log;"
      " next 5 s max = worst latency of transactions started in the 5 s after the commit;"
      " tps = pgbench transactions logged per second over the whole load)")
PY

: >"$CUTOVER_RAW/results.jsonl"
for i in $(seq 1 "$RUNS"); do
  RD=$CUTOVER_RAW/run$i
  mkdir -p "$RD"
  DB=cut$i
  createdb "$DB"
  q "CREATE TABLE obs (id bigint NOT NULL, created_at timestamptz NOT NULL, station text NOT NULL,
       value numeric(12,4), payload jsonb, note text, PRIMARY KEY (id, created_at))"
  q "INSERT INTO obs SELECT i, to_timestamp(1735689600 + (i % 700) * 86400 + i % 86400),
       'station-' || (i % 500), (random() * 10000)::numeric(12,4),
       jsonb_build_object('seq', i, 'ok', i % 2 = 0, 'note', md5(i::text), 'unit', 'mg/l'), 'n' || i
     FROM generate_series(1, $ROWS) i"
  q "CREATE INDEX ON obs (created_at); CREATE INDEX ON obs (station, created_at)"
  q "VACUUM ANALYZE obs"; q "CHECKPOINT"
  # 60 % inserts of new rows (created_at now()), 35 % updates, 5 % deletes
  # of existing rows by their full key; autocommit, simple protocol. The key's
  # created_at is a constant expression (to_timestamp of a number), as a
  # literal from an application would be: timestamptz + interval is only
  # stable, and would make every UPDATE plan all partitions of the new table.
  cat >"$W/load.sql" <<PGB
\\set r random(1, 100)
\\set id random(1, $ROWS)
\\set nid random(1000000000, 1000000000000000)
\\set ts 1735689600 + (:id % 700) * 86400 + :id % 86400
\\if :r <= 60
INSERT INTO obs (id, created_at, station, value, payload, note) VALUES (:nid, now(), 'station-' || :client_id, random() * 1000, jsonb_build_object('client', :client_id, 'r', :r), 'live');
\\elif :r <= 95
UPDATE obs SET value = value + 1, note = 'upd' WHERE id = :id AND created_at = to_timestamp(:ts);
\\else
DELETE FROM obs WHERE id = :id AND created_at = to_timestamp(:ts);
\\endif
PGB
  hold=$W/hold.$i
  touch "$hold"
  spec="    partition: {by: range (created_at), interval: 1 month}"
  if [ "$TARGET" = operator ]; then
    # As team plans make it: LIKE ... INCLUDING ALL, indexes in place.
    spec=""
    q "CREATE TABLE obs_part (LIKE obs INCLUDING ALL) PARTITION BY RANGE (created_at)"
    month_parts obs_part "$DB" 2025-01-01 2027-06-01
    q "CREATE TABLE obs_part_default PARTITION OF obs_part DEFAULT"
  fi
  cat >"$RD/plan.yaml" <<Y
name: cut$i
source: "dbname=$DB"
state_dir: $W
cutover: {postpone_file: $hold}
$([ "$ROLLBACK" = 1 ] && echo "rollback: {window: 1h}" || true)
tables:
  - source: public.obs
    target: public.obs_part
$spec
Y
  noise_before=$(others)
  (cd "$RD" && exec "$PGBENCH" -n -f "$W/load.sql" -c "$CLIENTS" -j "$THREADS" -R "$RATE" -T "$LOAD_S" \
    --log --log-prefix=pgbench_log "$DB" >"$RD/pgbench.out" 2>&1) &
  load=$!
  load_t0=$(now)
  sleep 2
  "$PGSHIFT_BIN" run --plan "$RD/plan.yaml" --auto-cutover >"$RD/pgshift.log" 2>&1 &
  run=$!
  if [ "$RELEASE_AT" = streaming ]; then
    until grep -q "streaming from slot" "$RD/pgshift.log"; do
      kill -0 $run 2>/dev/null || { cat "$RD/pgshift.log"; exit 1; }; sleep 0.02; done
  else
    until grep -q "analyzed in" "$RD/pgshift.log"; do
      kill -0 $run 2>/dev/null || { cat "$RD/pgshift.log"; exit 1; }; sleep 0.1; done
    sleep "$STEADY_S"
  fi
  rm -f "$hold"
  if [ "$ROLLBACK" = 1 ]; then
    # The run stays for the window: the cutover's record now, then the
    # swap back after ROLLBACK_AFTER_S s of the load on the new table.
    until grep -q "rollback window: streaming" "$RD/pgshift.log"; do
      kill -0 $run 2>/dev/null || { out "run $i: pgshift run failed:"; tail -n 20 "$RD/pgshift.log" | tee -a "$CUTOVER_OUT"; exit 1; }
      sleep 0.05
    done
    "$PGSHIFT_BIN" status --plan "$RD/plan.yaml" --json >"$RD/status-window.json"
    sleep "$ROLLBACK_AFTER_S"
    "$PGSHIFT_BIN" rollback --plan "$RD/plan.yaml" >"$RD/rollback.log" 2>&1 ||
      { out "run $i: pgshift rollback failed: $(tail -n 5 "$RD/rollback.log")"; exit 1; }
  fi
  if ! wait $run; then
    out "run $i: pgshift run failed:"; tail -n 20 "$RD/pgshift.log" | tee -a "$CUTOVER_OUT"; exit 1
  fi
  cut_t=$(now)
  noise_during=$(others)
  "$PGSHIFT_BIN" status --plan "$RD/plan.yaml" --json >"$RD/status.json"
  # With a rollback the status is the swap back's: the cutover's own
  # record is in the state.
  if [ "$ROLLBACK" = 1 ]; then
    q "SELECT cutover FROM pgshift.migrations WHERE name = 'cut$i'" >"$RD/cutover.json"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['cutover']=json.load(open(sys.argv[2])); json.dump(d, open(sys.argv[1], 'w'))" "$RD/status.json" "$RD/cutover.json"
  fi
  left=$(awk "BEGIN {printf \"%.1f\", $load_t0 + $LOAD_S - $cut_t}")
  pgb_rc=0; wait $load || pgb_rc=$?
  [ "$pgb_rc" = 0 ] || out "run $i: pgbench exited $pgb_rc: $(tail -n 3 "$RD/pgbench.out")"
  awk "BEGIN {exit !($left < 5)}" && out "run $i: WARNING: the cutover ended only $left s before the load did"
  failed=$(grep -oE "number of failed transactions: [0-9]+" "$RD/pgbench.out" | grep -oE "[0-9]+$" || echo "?")
  pgb_tps=$(grep -oE "tps = [0-9.]+" "$RD/pgbench.out" | head -1 | grep -oE "[0-9.]+$" || echo "?")
  lag=$(grep -oE "rate limit schedule lag: avg [0-9.]+ \(max [0-9.]+\) ms" "$RD/pgbench.out" || echo "?")
  r=$(python3 "$W/analyze.py" "$RD" "$BASE_S")
  echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); r.update(run=$i, failed='$failed', pgbench_tps='$pgb_tps'); print(json.dumps(r))" \
    >>"$CUTOVER_RAW/results.jsonl"
  out "run $i: pgbench $pgb_tps tps, $failed failed, $lag; $(grep -oE 'cut over after .*' "$RD/pgshift.log")"
  out "       client side: $(echo "$r" | python3 -c "import json,sys; r=json.load(sys.stdin); print('normal worst %.1f ms (p99 %.1f, %.0f tps), worst during %.1f ms over %d transactions (%d above normal worst), window %.1f ms; cutover span %.0f ms from the first lock; attempts at %s ms; next 5 s: p99 %.1f, max %.1f ms' % (r['normal_worst_ms'], r['base_p99_ms'], r['base_tps'], r['worst_during_ms'], r['during_n'], r['during_over_normal_worst'], r['window_ms'], r['cutover_span_ms'], r['attempt_starts'], r['after5s_p99_ms'], r['after5s_max_ms']))")"
  out "       noise: before: $noise_before; after: $noise_during"
  if [ "$ROLLBACK" = 1 ]; then
    rb=$(python3 "$W/analyze.py" "$RD" "$BASE_S" rollback)
    echo "$rb" | python3 -c "import json,sys; r=json.load(sys.stdin); r.update(run=$i, failed='$failed'); print(json.dumps(r))" \
      >>"$CUTOVER_RAW/rollback.jsonl"
    out "       rollback: $(grep -oE 'swapped back after .*' "$RD/pgshift.log"); client side: $(echo "$rb" | python3 -c "import json,sys; r=json.load(sys.stdin); print('normal worst %.1f ms, worst during %.1f ms over %d transactions, window %.1f ms' % (r['normal_worst_ms'], r['worst_during_ms'], r['during_n'], r['window_ms']))")"
  fi
  if [ "$ROLLBACK" = 1 ]; then
    "$PGSHIFT_BIN" abort --plan "$RD/plan.yaml" --confirm >"$RD/cleanup.log" 2>&1 || out "run $i: abort after the rollback failed: $(tail -n 3 "$RD/cleanup.log")"
  else
    "$PGSHIFT_BIN" cleanup --plan "$RD/plan.yaml" --confirm >"$RD/cleanup.log" 2>&1 || out "run $i: cleanup failed: $(tail -n 3 "$RD/cleanup.log")"
  fi
  dropdb "$DB"
  gzip -f "$RD"/pgbench_log.*
done
out ""
python3 "$W/summary.py" "$CUTOVER_RAW/results.jsonl" | tee -a "$CUTOVER_OUT"
if [ "$ROLLBACK" = 1 ]; then
  out ""
  out "the swap back (pgshift rollback, $ROLLBACK_AFTER_S s after the cutover, same load):"
  python3 "$W/summary.py" "$CUTOVER_RAW/rollback.jsonl" | sed 's/cutover span = first lock attempt to commit/span = first lock attempt of the swap back to its commit/' | tee -a "$CUTOVER_OUT"
fi
out "results: $CUTOVER_OUT; raw: $CUTOVER_RAW/"
