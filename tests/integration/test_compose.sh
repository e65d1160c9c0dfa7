#!/usr/bin/env bash
# test_compose.sh: the docker-compose staging rehearsal (docker/), checked
# without a Docker engine.
#  1. `docker-compose -f docker/compose.yaml config -q` accepts the file
#     (Debian's docker-compose 1.29, from scripts/install-deps.sh; when it is
#     missing, 1 and 2 print SKIP and only 3 runs);
#  2. the resolved config has the six services wired as docker/README.md says;
#     Prometheus scrapes pgshift's --http port at /metrics; the Grafana
#     datasource and dashboard are consistent, the dashboard parses, shows
#     pgshift_lag_bytes and uses only the metric names of the contract;
#  3. the same rehearsal natively: docker/seed.sql into this cluster,
#     docker/plan.yaml with the source swapped for this cluster, `pgshift
#     plan`, then docker/pgshift-entrypoint.sh running `pgshift run
#     --auto-cutover` (held by the postpone file it creates, as in the
#     container) under pgbench with docker/load.sql; release, cut over,
#     compare with the shadows, cleanup.
# Runs inside tests/lib/with-pg.sh.
source "$(dirname "$0")/lib/common.sh"
SRC=${PGSHIFT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
D=$SRC/docker
ROWS=20000

EP_PID=
LOAD_PID=
stop_bg() {
  # The entrypoint passes TERM on to its `pgshift run` and waits for it.
  if [ -n "$EP_PID" ] && kill -0 "$EP_PID" 2>/dev/null; then
    kill -TERM "$EP_PID" 2>/dev/null
    poll 5 gone "$EP_PID" || kill -KILL "$EP_PID" 2>/dev/null
  fi
  [ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null
  cleanup_common
}
trap stop_bg EXIT

# --- 1. the compose file as docker-compose reads it -------------------------
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f "$D/compose.yaml" config -q >"$WORK/config-q.log" 2>&1 ||
    fail "docker-compose config -q rejected docker/compose.yaml: $(cat "$WORK/config-q.log")"
  docker-compose -f "$D/compose.yaml" config >"$WORK/config.yaml" 2>"$WORK/config-err.log" ||
    fail "docker-compose config failed: $(cat "$WORK/config-err.log")"
  pass "docker-compose $(docker-compose version --short 2>/dev/null) config -q accepts docker/compose.yaml"

  # --- 2. services, scrape target, Grafana provisioning ---------------------
  python3 - "$WORK/config.yaml" "$D" "$SRC" >"$WORK/checks.log" 2>&1 <<'PY' ||
import json, os, re, sys
import yaml  # python3-yaml, a dependency of Debian's docker-compose

cfg_path, d, src = sys.argv[1:4]
cfg = yaml.safe_load(open(cfg_path))
errors = []
def check(ok, msg):
    if not ok:
        errors.append(msg)

svc = cfg.get("services", {})
want = {"postgres", "seed", "load", "pgshift", "prometheus", "grafana"}
check(set(svc) == want, f"services are {sorted(svc)}, expected {sorted(want)}")

def mounts(name):
    out = {}
    for v in svc.get(name, {}).get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            out[parts[1]] = parts[0]
        else:
            out[v.get("target")] = v.get("source")
    return out
def cmd(name):
    c = svc.get(name, {}).get("command", [])
    return c.split() if isinstance(c, str) else [str(x) for x in c]
def same(a, b):
    return a is not None and os.path.realpath(a) == os.path.realpath(b)

pg = svc.get("postgres", {})
check(str(pg.get("image", "")).startswith("postgres:15"), f"postgres image is {pg.get('image')}")
check("wal_level=logical" in cmd("postgres"), "postgres does not run with wal_level=logical")
check(any(x.startswith("max_replication_slots=") for x in cmd("postgres")) and
      any(x.startswith("max_wal_senders=") for x in cmd("postgres")),
      "postgres sets no max_replication_slots / max_wal_senders")
check(same(mounts("seed").get("/rehearsal/seed.sql"), f"{d}/seed.sql"), "seed does not mount docker/seed.sql")
check("/rehearsal/seed.sql" in cmd("seed"), "seed does not run seed.sql")
check(same(mounts("load").get("/rehearsal/load.sql"), f"{d}/load.sql"), "load does not mount docker/load.sql")
check(cmd("load")[:1] == ["pgbench"] and "/rehearsal/load.sql" in cmd("load"), "load is not pgbench on load.sql")
for s in ("load", "pgshift"):
    dep = svc.get(s, {}).get("depends_on", {})
    check(isinstance(dep, dict) and dep.get("seed", {}).get("condition") == "service_completed_successfully",
          f"{s} does not wait for the seed to complete")

ps = svc.get("pgshift", {})
b = ps.get("build", {})
check(same(b.get("context"), src), f"pgshift build context is {b.get('context')}, not the repository")
check(b.get("dockerfile") == "docker/Dockerfile" and os.path.isfile(f"{d}/Dockerfile"),
      "pgshift is not built from docker/Dockerfile")
c = cmd("pgshift")
check(c[:1] == ["run"] and "--auto-cutover" in c, f"pgshift command is {c}")
check("--plan" in c and c[c.index("--plan") + 1] == "/plan/plan.yaml", "pgshift does not run /plan/plan.yaml")
check(same(mounts("pgshift").get("/plan/plan.yaml"), f"{d}/plan.yaml"), "pgshift does not mount docker/plan.yaml")
port = None
if "--http" in c:
    m = re.fullmatch(r"0\.0\.0\.0:(\d+)", c[c.index("--http") + 1])
    check(m is not None, "pgshift --http does not listen on 0.0.0.0 (the container's loopback is unreachable)")
    port = m and m.group(1)
else:
    errors.append("pgshift runs without --http")

prom_file = mounts("prometheus").get("/etc/prometheus/prometheus.yml")
check(same(prom_file, f"{d}/prometheus/prometheus.yml"), "prometheus does not mount docker/prometheus/prometheus.yml")
prom = yaml.safe_load(open(f"{d}/prometheus/prometheus.yml"))
scrapes = [(sc.get("metrics_path", "/metrics"), t)
           for sc in prom.get("scrape_configs", [])
           for st in sc.get("static_configs", []) for t in st.get("targets", [])]
check(("/metrics", f"pgshift:{port}") in scrapes, f"prometheus scrapes {scrapes}, not pgshift:{port}/metrics")

gm = mounts("grafana")
check(same(gm.get("/etc/grafana/provisioning"), f"{d}/grafana/provisioning"), "grafana provisioning not mounted")
check(same(gm.get("/etc/grafana/dashboards"), f"{d}/grafana/dashboards"), "grafana dashboards not mounted")
dss = yaml.safe_load(open(f"{d}/grafana/provisioning/datasources/prometheus.yaml"))["datasources"]
check(any(x.get("type") == "prometheus" and x.get("url") == "http://prometheus:9090" for x in dss),
      "no Prometheus datasource at http://prometheus:9090")
uids = {x.get("uid") for x in dss}
prov = yaml.safe_load(open(f"{d}/grafana/provisioning/dashboards/pgshift.yaml"))["providers"]
check(any(p.get("options", {}).get("path") == "/etc/grafana/dashboards" for p in prov),
      "dashboard provider does not read /etc/grafana/dashboards")
dash_text = open(f"{d}/grafana/dashboards/pgshift-lag.json").read()
dash = json.loads(dash_text)
exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
check(any("pgshift_lag_bytes" in e for e in exprs), "the dashboard has no pgshift_lag_bytes panel")
contract = {"pgshift_phase", "pgshift_phase_info", "pgshift_lag_bytes", "pgshift_lag_seconds",
            "pgshift_eta_seconds", "pgshift_applied_changes_total", "pgshift_applied_transactions_total",
            "pgshift_copy_rows_total", "pgshift_copy_rows_estimated", "pgshift_slot_retained_bytes",
            "pgshift_apply_changes_per_second", "pgshift_wal_bytes_per_second",
            "pgshift_cutover_attempts_total", "pgshift_cutover_write_block_seconds"}
used = set(re.findall(r"pgshift_[a-z_]+", " ".join(exprs)))
check(used <= contract, f"the dashboard uses metrics outside the contract: {sorted(used - contract)}")
for want_m in ("pgshift_phase", "pgshift_lag_seconds", "pgshift_applied_changes_total",
               "pgshift_copy_rows_total", "pgshift_slot_retained_bytes",
               "pgshift_cutover_write_block_seconds"):
    check(want_m in used, f"the dashboard does not show {want_m}")
refs = {p.get("datasource", {}).get("uid") for p in dash["panels"]}
check(refs <= uids, f"panels use datasource uids {refs}, provisioned are {uids}")
check(os.path.isfile(f"{d}/pgshift-entrypoint.sh") and os.access(f"{d}/pgshift-entrypoint.sh", os.X_OK),
      "docker/pgshift-entrypoint.sh missing or not executable")
for line in open(f"{d}/Dockerfile"):
    m = re.match(r"COPY\s+(?!--from)(.+)\s+\S+\s*$", line)
    if m:
        for p in m.group(1).split():
            check(os.path.exists(f"{src}/{p}"), f"docker/Dockerfile copies {p}, which does not exist")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"six services; prometheus scrapes pgshift:{port}/metrics; "
      f"dashboard: {len(dash['panels'])} panels, metrics {sorted(used)}")
PY
    fail "compose config checks: $(cat "$WORK/checks.log")"
  pass "compose config: $(tail -n 1 "$WORK/checks.log")"
  if command -v promtool >/dev/null 2>&1; then  # optional (Debian's prometheus package)
    promtool check config "$D/prometheus/prometheus.yml" >"$WORK/promtool.log" 2>&1 ||
      fail "promtool rejects docker/prometheus/prometheus.yml: $(cat "$WORK/promtool.log")"
    pass "promtool check config accepts docker/prometheus/prometheus.yml"
  fi
else
  echo "SKIP: docker-compose is not installed (scripts/install-deps.sh installs Debian's" \
       "docker-compose); not checking docker/compose.yaml, only the native rehearsal"
fi

# --- 3. the rehearsal, natively -------------------------------------------
t_start=$(date +%s)
psql -X -v ON_ERROR_STOP=1 -v rows=$ROWS -f "$D/seed.sql" >"$WORK/seed.log" 2>&1 ||
  fail "docker/seed.sql failed"
[ "$(sql "SELECT count(*) FROM observations")" = $ROWS ] || fail "seed did not make $ROWS observations"
psql -X -v ON_ERROR_STOP=1 -v rows=$ROWS -f "$D/seed.sql" >"$WORK/seed2.log" 2>&1 ||
  fail "docker/seed.sql failed when run again"
grep -q "not seeding" "$WORK/seed2.log" && [ "$(sql "SELECT count(*) FROM stations")" = 50 ] ||
  fail "docker/seed.sql seeded twice"
pass "docker/seed.sql: $ROWS observations, 50 stations, view, shadows; a second run changes nothing"

# docker/plan.yaml with this cluster as the source and $WORK for /state.
sed -e "s|^source: .*|source: \"dbname=$PGDATABASE\"|" -e "s|/state|$WORK|g" "$D/plan.yaml" >"$WORK/plan.yaml"
grep -q "^source: \"dbname=$PGDATABASE\"" "$WORK/plan.yaml" && grep -q "postpone_file: $WORK/postpone" "$WORK/plan.yaml" ||
  fail "could not adapt docker/plan.yaml: $(cat "$WORK/plan.yaml")"
"$PGSHIFT" plan --plan "$WORK/plan.yaml" >"$WORK/plan.log" 2>&1 || fail "pgshift plan exited $? on docker/plan.yaml"
pass "pgshift plan accepts docker/plan.yaml (source swapped for this cluster)"

# The load runs until the test stops it after the swap (load_start), so it
# outlasts the cutover however long the run takes on a loaded machine.
load_start "$WORK/load.stop" "$WORK/load.log" -n -f "$D/load.sql" -D rows=$ROWS -c 2 -j 2 -R 200

http=()
if "$PGSHIFT" run --help 2>&1 | grep -q -- "--http"; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  http=(--http "127.0.0.1:$port")
fi
PGSHIFT_STATE_DIR=$WORK PGSHIFT_HOLD=1 PGSHIFT_STAY=0 \
  bash "$D/pgshift-entrypoint.sh" run --plan "$WORK/plan.yaml" --auto-cutover "${http[@]}" \
  >"$WORK/run.log" 2>&1 &
EP_PID=$!
RUN_PID=$EP_PID # for wait_for's report

phase() {
  "$PGSHIFT" status --plan "$WORK/plan.yaml" --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("phase", ""))' 2>/dev/null
}
ready_or_dead() {
  live_phase_is "$WORK/plan.yaml" ready && return 0
  kill -0 "$EP_PID" 2>/dev/null || fail "the run exited before it caught up"
  return 1
}
wait_for 30 "the run to catch up (live phase ready)" ready_or_dead
[ -e "$WORK/postpone" ] || fail "the entrypoint did not create the postpone file"
# The run, ready, wants to cut over and says why it does not.
wait_for 30 "the run to log that the flag file postpones its automatic cutover" \
  log_has "$WORK/run.log" "automatic cutover postponed: the flag file $WORK/postpone exists"
# Then 2 s more with the file in place: the duration is the point, a window in
# which a run that ignored the file would cut over.
sleep 2
kill -0 "$EP_PID" 2>/dev/null && [ "$(phase)" != done ] ||
  fail "the run cut over while $WORK/postpone existed"
"$PGSHIFT" status --plan "$WORK/plan.yaml" >"$WORK/status.log" 2>&1 || fail "pgshift status failed"
pass "caught up under load; the automatic cutover waits while the postpone file exists"

if [ "${#http[@]}" -gt 0 ]; then
  python3 - "$port" "$D/grafana/dashboards/pgshift-lag.json" >"$WORK/http.log" 2>&1 <<'PY' ||
import json, re, sys, urllib.request
port, dash = sys.argv[1:3]
base = f"http://127.0.0.1:{port}"
text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
def value(name):
    m = re.search(r'^%s\{[^}]*migration="demo"[^}]*\} (\S+)$' % name, text, re.M)
    return m and float(m.group(1))
errors = []
if value("pgshift_phase") not in (2.0, 3.0):
    errors.append(f"pgshift_phase is {value('pgshift_phase')}, expected 3 (ready) or 2")
if value("pgshift_lag_bytes") is None:
    errors.append("no pgshift_lag_bytes{migration=\"demo\"}")
json.loads(urllib.request.urlopen(base + "/status", timeout=5).read())
exposed = set(re.findall(r"^(pgshift_[a-z_]+)", text, re.M))
used = set(re.findall(r"pgshift_[a-z_]+", open(dash).read()))
missing = sorted(used - exposed)
if missing:
    errors.append("the Grafana dashboard queries metrics /metrics does not expose: " + ", ".join(missing))
if errors:
    print("\n".join(errors)); print(text[:3000]); sys.exit(1)
print("phase %g, lag_bytes %g; all %d metrics of the dashboard exposed"
      % (value("pgshift_phase"), value("pgshift_lag_bytes"), len(used)))
PY
    fail "pgshift --http: $(cat "$WORK/http.log")"
  pass "pgshift run ${http[*]}: /metrics (Prometheus' scrape path) and /status answer; $(tail -n 1 "$WORK/http.log")"
else
  echo "note: this pgshift has no \`run --http\` yet; /metrics not checked natively"
fi

rm -f "$WORK/postpone"
wait_for 30 "the run to cut over and exit after the release" gone "$EP_PID"
wait "$EP_PID"
rc=$?
EP_PID=
[ "$rc" = 0 ] || fail "the entrypoint's pgshift run exited $rc"
grep -q "cut over after" "$WORK/run.log" || fail "the run ended without cutting over"
[ -e "$WORK/.cut-over" ] || fail "the entrypoint wrote no cut-over marker"
[ "$(sql "SELECT relkind FROM pg_class WHERE oid = 'observations'::regclass")" = p ] ||
  fail "observations is not the partitioned table after the cutover"
kill -0 "$LOAD_PID" 2>/dev/null || fail "the load ended before the swap: $(tail -n 3 "$WORK/load.log")"
pass "released: cut over by itself (exit 0) while the load kept writing"

# rows_after_swap: the load's rows in the new table (ids past the old one's).
rows_after_swap() { sql "SELECT count(*) FROM observations WHERE id > (SELECT max(id) FROM observations_old)"; }
new_writes() { [ "$(rows_after_swap)" -gt 0 ] 2>/dev/null; }
wait_for 30 "a load write to reach the new observations table" new_writes
load_stop "$WORK/load.stop" "$WORK/load.log" || fail "pgbench with docker/load.sql: $LOAD_WHY"
LOAD_PID=
same_rows observations_shadow observations
same_rows stations_shadow stations
after=$(rows_after_swap)
[ "$after" -gt 0 ] || fail "no load writes reached the new observations table"
pass "the load finished with 0 failures; observations and stations equal their shadows ($after rows written after the swap)"

PGSHIFT_STATE_DIR=$WORK PGSHIFT_HOLD=1 PGSHIFT_STAY=0 timeout 10 \
  bash "$D/pgshift-entrypoint.sh" run --plan "$WORK/plan.yaml" --auto-cutover >"$WORK/rerun.log" 2>&1 ||
  fail "the entrypoint started again after the cutover exited $?"
grep -q "already cut over" "$WORK/rerun.log" && [ ! -e "$WORK/postpone" ] ||
  fail "the entrypoint ran again after the cutover: $(cat "$WORK/rerun.log")"
"$PGSHIFT" cleanup --plan "$WORK/plan.yaml" --confirm >"$WORK/cleanup.log" 2>&1 || fail "pgshift cleanup exited $?"
[ "$(sql "SELECT count(*) FROM pg_replication_slots")$(sql "SELECT count(*) FROM pg_class WHERE relname IN ('observations_old', 'stations_old')")" = 00 ] ||
  fail "cleanup left a slot or old tables"
pass "a restart after the cutover does not migrate again; cleanup drops the old tables and the slot ($(($(date +%s) - t_start)) s for the rehearsal)"
finish
