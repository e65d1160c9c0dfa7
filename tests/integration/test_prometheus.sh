#!/usr/bin/env bash
# A real Prometheus (Debian's `prometheus` package, from scripts/install-deps.sh)
# scrapes `pgshift run --http` once a second, and the test reads the metrics
# back through Prometheus's HTTP API:
#  1. the raw /metrics is text format 0.0.4 and `promtool check metrics`
#     finds nothing to lint; pgshift_source_info carries the server's own
#     server_version (SHOW server_version), the pgoutput proto_version of its
#     major (2 on 14, 3 on 15, 4 on 16+) and origin_filter (true on 16+);
#  2. Prometheus scrapes the target healthily and pgshift_lag_bytes has
#     exactly the labels {migration, job, instance};
#  3. `pgshift pause` plus an insert: Prometheus sees the lag reach at least
#     the WAL the insert wrote, with pgshift_paused 1 and pgshift_phase 6
#     (and promtool lints that /metrics too), and pgshift_source_info has
#     proto_version "0" and origin_filter "false" (the stream is closed);
#  4. `pgshift resume`: the lag drops back near 0, and query_range over the
#     run shows near 0 before the pause, the peak inside it and near 0 after;
#  5. pgshift_copy_rows_total and pgshift_applied_changes_total by table equal
#     the rows copied and applied, pgshift_phase is 3 (ready) and
#     pgshift_phase_info has the single series phase="ready", and
#     pgshift_source_info the single series with the streaming labels of 1.
# Prometheus runs with its own config, TSDB and listen address under $WORK
# (nothing of the system's /etc/prometheus or /var/lib/prometheus).
# Runs inside tests/lib/with-pg.sh.
source "$(dirname "$0")/lib/common.sh"
PROMETHEUS=${PGSHIFT_PROMETHEUS:-/usr/bin/prometheus}
PROMTOOL=${PGSHIFT_PROMTOOL:-/usr/bin/promtool}
ROWS=5000    # copied from the snapshot
MORE=20000   # inserted while paused
NEAR0=65536  # "caught up" lag, bytes

[ -x "$PROMETHEUS" ] && [ -x "$PROMTOOL" ] ||
  fail "no $PROMETHEUS / $PROMTOOL: install Debian's prometheus package (scripts/install-deps.sh)"

sqlf - <<SQL || fail setup
CREATE TABLE p (id bigint PRIMARY KEY, v text);
INSERT INTO p SELECT i, md5(i::text) FROM generate_series(1, $ROWS) i;
CREATE TABLE p_new (LIKE p INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: prom
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
tables:
  - {source: public.p, target: public.p_new}
Y
# Port 0: the kernel picks a free port and the run logs it (no race).
"$PGSHIFT" run --plan "$WORK/plan.yaml" --http 127.0.0.1:0 >"$WORK/run.log" 2>&1 &
RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
wait_streaming "$WORK/run.log" 60
wait_applied pgshift_prom 60
PORT=$(sed -n 's/.*HTTP on .* (port \([0-9]*\)).*/\1/p' "$WORK/run.log" | head -n 1)
[ -n "$PORT" ] || fail "the run did not log its HTTP port"
METRICS=http://127.0.0.1:$PORT/metrics

# 1. The exposition text itself.
curl -sS -D "$WORK/metrics.hdr" -o "$WORK/metrics.txt" --max-time 5 "$METRICS" || fail "GET $METRICS"
grep -qi '^content-type: text/plain; version=0.0.4' "$WORK/metrics.hdr" ||
  fail "/metrics content type: $(cat "$WORK/metrics.hdr")"
"$PROMTOOL" check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1; rc=$?
[ "$rc" = 0 ] && [ ! -s "$WORK/promtool.out" ] || fail "promtool check metrics (exit $rc): $(cat "$WORK/promtool.out")"
for m in phase phase_info lag_bytes lag_seconds eta_seconds apply_changes_per_second \
    apply_transactions_per_second apply_bytes_per_second wal_bytes_per_second applied_transactions_total \
    applied_changes_total copy_rows_total copy_rows_estimated copy_done slot_retained_bytes \
    slot_safe_bytes postponed paused; do
  grep -q "^pgshift_$m{migration=\"prom\"" "$WORK/metrics.txt" || fail "/metrics has no pgshift_$m: $(cat "$WORK/metrics.txt")"
done
pass "/metrics is text format 0.0.4 and promtool check metrics finds no problem"

# The source's version and the stream's protocol, as the server says.
SV=$(sql "SHOW server_version") || fail "SHOW server_version"
case "$PGSHIFT_TEST_PG" in 14) PROTO=2 ;; 15) PROTO=3 ;; *) PROTO=4 ;; esac
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then ORIGIN=true; else ORIGIN=false; fi
# source_info_is FILE PROTO ORIGIN: a fresh /metrics (to FILE) has exactly
# one pgshift_source_info sample, with these labels.
source_info_is() {
  curl -sS -o "$1" --max-time 5 "$METRICS" 2>/dev/null || return 1
  [ "$(grep -c '^pgshift_source_info{' "$1")" = 1 ] &&
    grep -qxF "pgshift_source_info{migration=\"prom\",server_version=\"$SV\",proto_version=\"$2\",origin_filter=\"$3\"} 1" "$1"
}
# The first snapshot predates the stream: wait for a stats sample (2 s).
poll 15 source_info_is "$WORK/metrics-src.txt" "$PROTO" "$ORIGIN" ||
  fail "no pgshift_source_info with server_version $SV, proto_version $PROTO, origin_filter $ORIGIN: $(grep source_info "$WORK/metrics-src.txt")"
grep -q '^# TYPE pgshift_source_info gauge$' "$WORK/metrics-src.txt" || fail "/metrics: no TYPE line for pgshift_source_info"
pass "/metrics: pgshift_source_info server_version=\"$SV\" proto_version=\"$PROTO\" origin_filter=\"$ORIGIN\" (PostgreSQL $PGSHIFT_TEST_PG)"

# 2. Prometheus, on a free port of its own.
PPORT=
cat >"$WORK/prometheus.yml" <<Y
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pgshift
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
Y
"$PROMTOOL" check config "$WORK/prometheus.yml" >"$WORK/checkconfig.out" 2>&1 ||
  fail "promtool check config: $(cat "$WORK/checkconfig.out")"
prom_ready() { curl -sf --max-time 1 "http://127.0.0.1:$PPORT/-/ready" >/dev/null 2>&1; }
prom_ready_or_gone() { gone "$PROM_PID" || prom_ready; }
for try in 1 2 3; do
  PPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PPORT" --web.console.templates="$WORK/consoles" \
    --web.console.libraries="$WORK/console_libraries" --log.level=warn \
    >"$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!; RUN_PIDS+=("$PROM_PID")
  # Ready, or exited (its port was taken meanwhile), or 20 s: try another port.
  poll 20 prom_ready_or_gone
  prom_ready && break
  kill -KILL "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null
  [ "$try" = 3 ] && fail "prometheus did not become ready"
done

# q.py: the Prometheus HTTP API, with urllib and json.
cat >"$WORK/q.py" <<'PY'
import json, math, sys, time, urllib.parse, urllib.request
base = "http://127.0.0.1:%s/api/v1/" % sys.argv[1]
SEL = 'migration="prom"'
TABLE = 'table="public.p"'  # schema.table, unquoted

def api(path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.load(r)
    assert d["status"] == "success", d
    return d["data"]

def query(q):
    return api("query", query=q)["result"]

def one(q):
    """The value of the single series q selects, or None when there is none."""
    res = query(q)
    assert len(res) <= 1, (q, res)
    return float(res[0]["value"][1]) if res else None

def wait(what, timeout, cond):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = cond()
            if last[0]:
                return last[1]
        except (OSError, AssertionError, KeyError, IndexError, ValueError) as e:
            last = (False, repr(e))
        time.sleep(0.25)
    sys.exit("%s: not within %ss (last: %r)" % (what, timeout, last))

cmd = sys.argv[2]
if cmd == "scraped":
    # The target is up, scraped without error, and the lag series has exactly
    # the labels pgshift gives plus Prometheus's job and instance.
    port = sys.argv[3]
    def up():
        t = api("targets", state="active")["activeTargets"]
        return (len(t) == 1 and t[0]["health"] == "up" and query('pgshift_lag_bytes{%s}' % SEL), t)
    t = wait("target up with a pgshift_lag_bytes sample", 15, up)
    assert t[0]["lastError"] == "", t
    assert t[0]["labels"] == {"instance": "127.0.0.1:" + port, "job": "pgshift"}, t[0]["labels"]
    res = query("pgshift_lag_bytes")
    assert len(res) == 1, res
    want = {"__name__": "pgshift_lag_bytes", "migration": "prom", "job": "pgshift",
            "instance": "127.0.0.1:" + port}
    assert res[0]["metric"] == want, res[0]["metric"]
    lag = float(res[0]["value"][1])
    assert lag < 65536, "lag before the pause: %s" % lag
    # Prometheus parsed every family: no sample got lost at ingestion.
    n = one('scrape_samples_scraped{job="pgshift"}')
    assert n is not None and n >= 20, n
    print("target up, lag_bytes labels %s, %d samples a scrape" % (sorted(want), n))
elif cmd == "scraped_since":
    # Exit 0 once Prometheus holds a lag sample scraped after the time T.
    t = one('timestamp(pgshift_lag_bytes{%s})' % SEL)
    sys.exit(0 if t is not None and t > float(sys.argv[3]) else 1)
elif cmd == "paused":
    # While paused: the lag Prometheus stores reaches the inserted WAL.
    need = float(sys.argv[3])
    def peak():
        lag, paused, phase = (one('pgshift_%s{%s}' % (m, SEL)) for m in ("lag_bytes", "paused", "phase"))
        return (lag is not None and lag >= need and paused == 1 and phase == 6, (lag, paused, phase))
    lag = wait("lag >= %d bytes, paused 1, phase 6 while paused" % need, 15, peak)[0]
    print("paused: lag %d bytes >= %d, pgshift_paused 1, pgshift_phase 6" % (lag, need))
elif cmd == "drained":
    def low():
        lag, paused = (one('pgshift_%s{%s}' % (m, SEL)) for m in ("lag_bytes", "paused"))
        return (lag is not None and lag < float(sys.argv[3]) and paused == 0, (lag, paused))
    lag = wait("lag back near 0 and paused 0 after resume", 20, low)[0]
    print("resumed: lag %d bytes" % lag)
elif cmd == "range":
    # query_range from before the pause to now, step 1s.
    t0, tp, tr, need, near0 = map(float, sys.argv[3:8])
    now = round(time.time(), 3)
    t0 = now - math.ceil(now - t0)  # a whole number of steps: the last point is at now
    r = api("query_range", query='pgshift_lag_bytes{%s}' % SEL, start="%.3f" % t0,
            end="%.3f" % now, step="1s")
    assert r["resultType"] == "matrix" and len(r["result"]) == 1, r
    s = r["result"][0]
    assert s["metric"]["migration"] == "prom", s["metric"]
    pts = [(float(t), float(v)) for t, v in s["values"]]
    before = [v for t, v in pts if t < tp]
    during = [v for t, v in pts if tp <= t <= tr + 1]
    assert before and during, pts
    assert min(before) < near0, ("before the pause", before)
    assert max(during) >= need, ("max over the pause %s < %s" % (max(during), need), during)
    assert pts[-1][1] < near0, ("latest", pts[-1])
    # max_over_time agrees with the range.
    m = one('max_over_time(pgshift_lag_bytes{%s}[%ds])' % (SEL, int(now - t0) + 1))
    assert m is not None and m >= max(v for _, v in pts), (m, max(v for _, v in pts))
    ph = api("query_range", query='pgshift_phase{%s}' % SEL, start="%.3f" % tp,
             end="%.3f" % now, step="1s")["result"]
    assert len(ph) == 1 and {6.0, 3.0} <= {float(v) for _, v in ph[0]["values"]}, ph
    print("query_range: %d points, before the pause <= %d, peak %d, latest %d"
          % (len(pts), max(before), max(during), pts[-1][1]))
elif cmd == "final":
    rows, applied = float(sys.argv[3]), float(sys.argv[4])
    def ok():
        c = one('pgshift_copy_rows_total{%s,%s}' % (SEL, TABLE))
        a = one('pgshift_applied_changes_total{%s,%s}' % (SEL, TABLE))
        ph = one('pgshift_phase{%s}' % SEL)
        return (c == rows and a == applied and ph == 3, (c, a, ph))
    wait("copy_rows_total %d, applied_changes_total %d, phase 3" % (rows, applied), 10, ok)
    assert one('pgshift_copy_done{%s,%s}' % (SEL, TABLE)) == 1
    info = query('pgshift_phase_info{%s}' % SEL)
    assert [(i["metric"]["phase"], i["value"][1]) for i in info] == [("ready", "1")], info
    assert one('pgshift_applied_transactions_total{%s}' % SEL) >= 1
    # The source's labels, as scraped now (streaming again after the resume).
    sv, proto, origin = sys.argv[5:8]
    def src():
        info = query('pgshift_source_info{%s}' % SEL)
        return (len(info) == 1 and info[0]["metric"].get("proto_version") == proto, info)
    info = wait("pgshift_source_info with proto_version %s" % proto, 10, src)
    lab = {k: v for k, v in info[0]["metric"].items() if k not in ("job", "instance")}
    want = {"__name__": "pgshift_source_info", "migration": "prom", "server_version": sv,
            "proto_version": proto, "origin_filter": origin}
    assert lab == want and info[0]["value"][1] == "1", (lab, want, info)
    print("copy_rows_total %d, applied_changes_total %d, phase 3 / phase_info ready, "
          "source_info %s" % (rows, applied, sorted(want.items())))
else:
    sys.exit("q.py: unknown command " + cmd)
PY
Q() { python3 "$WORK/q.py" "$PPORT" "$@"; }

Q scraped "$PORT" >"$WORK/q.out" 2>&1 || fail "scrape: $(cat "$WORK/q.out")"
pass "prometheus scrapes /metrics: $(cat "$WORK/q.out")"

# 3. Pause, insert, let Prometheus see the lag.
t0=$(date +%s.%N)
# A scrape of the caught-up lag after t0, before the pause.
scraped_since() { Q scraped_since "$1" 2>/dev/null; }
wait_for 15 "prometheus to scrape the caught-up lag after $t0" scraped_since "$t0"
"$PGSHIFT" pause --plan "$WORK/plan.yaml" >"$WORK/pause.out" 2>&1 || fail "pause: $(cat "$WORK/pause.out")"
tp=$(date +%s.%N)
lsn0=$(sql "SELECT pg_current_wal_insert_lsn()")
sql "INSERT INTO p SELECT i, md5(i::text) FROM generate_series($ROWS + 1, $ROWS + $MORE) i" || fail insert
lsn1=$(sql "SELECT pg_current_wal_insert_lsn()")
# Everything applied is at most lsn0, every later source position at least
# lsn1: the lag while paused is at least the WAL of the insert.
NEED=$(sql "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
[ "$NEED" -gt 500000 ] || fail "the insert wrote only $NEED bytes of WAL"
Q paused "$NEED" >"$WORK/q.out" 2>&1 || fail "while paused: $(cat "$WORK/q.out")"
curl -sS -o "$WORK/metrics2.txt" --max-time 5 "$METRICS" || fail "GET $METRICS while paused"
"$PROMTOOL" check metrics <"$WORK/metrics2.txt" >"$WORK/promtool.out" 2>&1; rc=$?
[ "$rc" = 0 ] && [ ! -s "$WORK/promtool.out" ] || fail "promtool check metrics while paused (exit $rc): $(cat "$WORK/promtool.out")"
pass "$(cat "$WORK/q.out"); promtool finds no problem in the paused /metrics"
source_info_is "$WORK/metrics-paused.txt" 0 false ||
  fail "paused: pgshift_source_info: $(grep source_info "$WORK/metrics-paused.txt")"
pass "paused: pgshift_source_info proto_version=\"0\" origin_filter=\"false\" (the stream is closed)"

# 4. Resume: the lag drains and Prometheus sees it back near 0.
"$PGSHIFT" resume --plan "$WORK/plan.yaml" >"$WORK/resume.out" 2>&1 || fail "resume: $(cat "$WORK/resume.out")"
tr=$(date +%s.%N)
wait_applied pgshift_prom 30
same_rows p p_new
Q drained "$NEAR0" >"$WORK/q.out" 2>&1 || fail "after resume: $(cat "$WORK/q.out")"
pass "$(cat "$WORK/q.out")"
Q range "$t0" "$tp" "$tr" "$NEED" "$NEAR0" >"$WORK/q.out" 2>&1 || fail "query_range: $(cat "$WORK/q.out")"
pass "$(cat "$WORK/q.out")"

# 5. Counters and phase.
Q final "$ROWS" "$MORE" "$SV" "$PROTO" "$ORIGIN" >"$WORK/q.out" 2>&1 || fail "counters: $(cat "$WORK/q.out")"
pass "$(cat "$WORK/q.out")"

kill -TERM "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null
stop_run
finish
