#!/usr/bin/env bash
# The HTTP endpoints of `pgshift run --http` on a live migration: /status
# (JSON), /metrics (Prometheus text) and the dashboard at / rendered by
# headless Chromium while the source takes writes: the page shows the live
# phase and has polled /status more than once (a lag chart with >= 2 points),
# it is self-contained (no external assets), and it shows an error banner
# when /status cannot be fetched. /status and the page's header show the
# source's server_version (as SHOW server_version says) and the stream's
# pgoutput proto_version (2 on 14, 3 on 15, 4 on 16+) and origin filter (on
# on 16+). The screenshot is kept as an artifact:
# $PGSHIFT_BUILD_DIR/artifacts/dashboard.png (else $WORK/dashboard.png).
source "$(dirname "$0")/lib/common.sh"

# Headless Chromium (as root: --no-sandbox is required).
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ] && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium >"$WORK/apt.log" 2>&1 ||
    { apt-get update -qq >>"$WORK/apt.log" 2>&1 &&
      apt-get install -y -qq --no-install-recommends chromium >>"$WORK/apt.log" 2>&1; }
  CHROME=$(command -v chromium || true)
fi
[ -n "$CHROME" ] || fail "no chromium (install it: scripts/install-deps.sh as root)"

# chrome ARGS...: headless Chromium with a throwaway profile, never a proxy.
chrome() {
  timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
    --no-proxy-server --user-data-dir="$WORK/chrome" "$@" 2>>"$WORK/chrome.err"
}

# get URL OUT: the body to OUT, the Content-Type on stdout; fails on non-200.
get() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with op.open(sys.argv[1], timeout=10) as r:
    open(sys.argv[2], "wb").write(r.read())
    print(r.headers.get("Content-Type", ""))
PY
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sqlf - <<'SQL' || fail setup
CREATE TABLE d (id bigint PRIMARY KEY, v text);
INSERT INTO d SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
CREATE TABLE d_new (LIKE d INCLUDING ALL);
SQL
cat >"$WORK/plan.yaml" <<Y
name: dash
source: "dbname=${PGDATABASE}"
state_dir: $WORK
apply: {batch_time: 50ms}
tables:
  - {source: public.d, target: public.d_new}
Y

# Start the run on a free port; if another process takes it first, retry.
for attempt in 1 2 3; do
  PORT=$(free_port) || fail "no free port"
  "$PGSHIFT" run --plan "$WORK/plan.yaml" --http "127.0.0.1:$PORT" >"$WORK/run.log" 2>&1 &
  RUN_PID=$!; RUN_PIDS+=("$RUN_PID")
  wait_streaming "$WORK/run.log"
  if grep -q "cannot listen" "$WORK/run.log"; then # the port was taken meanwhile
    [ "$attempt" = 3 ] && fail "no port to listen on after 3 attempts"
    kill -TERM "$RUN_PID"; wait "$RUN_PID"
    continue
  fi
  get "http://127.0.0.1:$PORT/status" /dev/null >/dev/null 2>"$WORK/get.err" ||
    fail "the HTTP server does not answer on $PORT: $(tail -1 "$WORK/get.err")"
  break
done
BASE=http://127.0.0.1:$PORT
wait_applied pgshift_dash
SV=$(sql "SHOW server_version") && SVN=$(sql "SHOW server_version_num") || fail "SHOW server_version"
case "$PGSHIFT_TEST_PG" in 14) PROTO=2 ;; 15) PROTO=3 ;; *) PROTO=4 ;; esac
if [ "$PGSHIFT_TEST_PG" -ge 16 ]; then ORIGIN=true; else ORIGIN=false; fi
export SV SVN PROTO ORIGIN
# The first snapshot predates the stream: wait for a stats sample (2 s).
streaming_status() {
  get "$BASE/status" "$WORK/status.json" >/dev/null 2>&1 &&
    python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["proto_version"] == 0)' "$WORK/status.json" 2>/dev/null
}
wait_for 15 "a /status snapshot of the live stream (proto_version not 0)" streaming_status

ctype=$(get "$BASE/status" "$WORK/status.json") || fail "GET /status"
[[ $ctype == application/json* ]] || fail "/status Content-Type: $ctype"
python3 - "$WORK/status.json" <<'PY' || fail "/status: $(cat "$WORK/status.json")"
import json, os, sys
s = json.load(open(sys.argv[1]))
assert s["migration"] == "dash" and s["phase"] in ("catching_up", "ready"), s
t = s["tables"]
unq = lambda n: n.replace('"', "")  # names come quoted: "public"."d"
assert len(t) == 1 and unq(t[0]["source"]) == "public.d" and unq(t[0]["target"]) == "public.d_new", t
assert t[0]["rows_copied"] == 20000 and t[0]["copy_done"] is True, t
assert s["slot"]["wal_status"] in ("reserved", "extended"), s["slot"]
assert "cutover" in s and s["paused"] is False, s
for k in ("lag_bytes", "lag_seconds", "eta_seconds", "apply_changes_per_second", "source_lsn",
          "applied_lsn", "confirmed_lsn", "taken_at_unix_ms", "applied_changes"):
    assert k in s, k
assert isinstance(s["lag_bytes"], int) and s["lag_bytes"] >= 0, s["lag_bytes"]
e = os.environ
want = {"server_version": e["SV"], "server_version_num": int(e["SVN"]),
        "proto_version": int(e["PROTO"]), "origin_filter": e["ORIGIN"] == "true"}
got = {k: s.get(k) for k in want}
assert got == want, (got, want)
PY
pass "/status serves the live migration as JSON (PostgreSQL $SV, proto_version $PROTO, origin filter $ORIGIN)"

ctype=$(get "$BASE/metrics" "$WORK/metrics.txt") || fail "GET /metrics"
[[ $ctype == text/plain* ]] || fail "/metrics Content-Type: $ctype"
grep -Eq '^pgshift_lag_bytes\{migration="dash"\} [0-9]+(\.[0-9]+)?(e\+?[0-9]+)?$' "$WORK/metrics.txt" ||
  fail "/metrics: no pgshift_lag_bytes sample: $(head -c 2000 "$WORK/metrics.txt")"
grep -Eq '^pgshift_phase_info\{migration="dash",phase="(catching_up|ready)"\} 1$' "$WORK/metrics.txt" ||
  fail "/metrics: no phase_info: $(grep phase "$WORK/metrics.txt")"
grep -Eq '^pgshift_copy_rows_total\{migration="dash",table="(\\"public\\"\.\\"d\\"|public\.d)"\} 20000$' "$WORK/metrics.txt" ||
  fail "/metrics: copy_rows_total: $(grep copy_rows "$WORK/metrics.txt")"
grep -q '^# TYPE pgshift_lag_bytes gauge$' "$WORK/metrics.txt" || fail "/metrics: no TYPE line"
grep -qxF "pgshift_source_info{migration=\"dash\",server_version=\"$SV\",proto_version=\"$PROTO\",origin_filter=\"$ORIGIN\"} 1" "$WORK/metrics.txt" ||
  fail "/metrics: source_info: $(grep source_info "$WORK/metrics.txt")"
pass "/metrics serves Prometheus text"

ctype=$(get "$BASE/" "$WORK/page.html") || fail "GET /"
[[ $ctype == text/html* ]] || fail "/ Content-Type: $ctype"
cmp -s "$WORK/page.html" "${PGSHIFT_SOURCE_DIR:-.}/src/status/dashboard.html" ||
  fail "/ is not src/status/dashboard.html (rebuild: cmake --build build)"
# Self-contained: nothing fetched but /status (the SVG namespace is no fetch).
if grep -Eqi '<(link|img|iframe|object|embed)\b|\bsrc=|@import|url\(|@font-face' "$WORK/page.html" ||
   grep -o 'https\?://[^"'"'"' )]*' "$WORK/page.html" | grep -qv '^http://www.w3.org/2000/svg$'; then
  fail "the dashboard loads external assets"
fi
for id in phase source lag-bytes lag-seconds eta lag-line tables; do
  grep -q "id=\"$id\"" "$WORK/page.html" || fail "the dashboard has no id=\"$id\""
done
pass "/ serves the dashboard, self-contained, $(wc -c <"$WORK/page.html") bytes"

# Load on the source while Chromium renders: 4000 rows over ~4 s.
(
  for i in $(seq 0 19); do
    lo=$((20001 + i * 200))
    psql -XAtq -c "INSERT INTO d SELECT g, md5(g::text) FROM generate_series($lo, $((lo + 199))) g" || exit 1
    sleep 0.2 # pacing: the load is spread over the seconds Chromium renders
  done
) >"$WORK/load.log" 2>&1 &
LOAD_PID=$!; RUN_PIDS+=("$LOAD_PID")
wait_for 30 "the load to reach the target (more than 20000 rows in d_new)" sql_is t "SELECT count(*) > 20000 FROM d_new"

# --virtual-time-budget advances setInterval: 8 s of page time, ~8 polls.
chrome --virtual-time-budget=8000 --dump-dom "$BASE/" >"$WORK/dom.html" ||
  fail "chromium --dump-dom: $(tail -5 "$WORK/chrome.err")"
python3 - "$WORK/dom.html" <<'PY' || fail "dashboard DOM: $(head -c 3000 "$WORK/dom.html")"
import os, re, sys
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(s):
        super().__init__(); s.attrs = {}; s.text = {}; s.stack = []
    def handle_starttag(s, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            s.attrs[a["id"]] = a; s.text[a["id"]] = ""
        if tag not in ("br", "meta", "input", "img", "link", "polyline", "line"):
            s.stack.append(a.get("id"))
    def handle_startendtag(s, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            s.attrs[a["id"]] = a; s.text[a["id"]] = ""
    def handle_endtag(s, tag):
        if tag not in ("br", "meta", "input", "img", "link", "polyline", "line") and s.stack:
            s.stack.pop()
    def handle_data(s, d):
        for i in s.stack:
            if i: s.text[i] += d
p = P(); p.feed(open(sys.argv[1], encoding="utf-8").read())
t = {k: " ".join(v.split()) for k, v in p.text.items()}
assert t.get("migration") == "dash", t.get("migration")
assert t.get("phase") in ("catching_up", "ready"), "phase: %r" % t.get("phase")
assert p.attrs["phase"].get("class") == "p-" + t["phase"], p.attrs["phase"]
pts = p.attrs["lag-line"].get("points", "").split()
assert len(pts) >= 2, "lag-line points: %r" % pts
assert all(re.fullmatch(r"[0-9.]+,[0-9.]+", x) for x in pts), pts
assert re.fullmatch(r"[0-9.]+ MB", t.get("lag-bytes", "")), "lag-bytes: %r" % t.get("lag-bytes")
assert re.fullmatch(r"[0-9.]+ s|\d+ min( \d+ s)?|\d+ h( \d+ min)?", t.get("lag-seconds", "")), t.get("lag-seconds")
assert t.get("eta") in ("caught up", "never — the source writes faster", "not known yet") or \
    re.fullmatch(r"\d+ s|\d+ min( \d+ s)?|\d+ h( \d+ min)?", t.get("eta", "")), "eta: %r" % t.get("eta")
tb = t.get("tables", "").replace('"', "")
assert re.search(r"public\.d\s*→\s*public\.d_new", tb) and re.search(r"20,000 / \S+ \(100\.0 %\)", tb) \
    and re.search(r"MB\s*done", tb), t.get("tables")
assert "hidden" in p.attrs["error"], "error banner shown: %r" % t.get("error")
assert "MB" in t.get("y-axis", ""), "y axis: %r" % t.get("y-axis")
e = os.environ
src = "PostgreSQL %s · pgoutput proto_version %s, streaming, origin filter %s" % (
    e["SV"], e["PROTO"], "on" if e["ORIGIN"] == "true" else "off")
assert t.get("source") == " ".join(src.split()), "source: %r, expected %r" % (t.get("source"), src)
print("phase %s, %d lag samples, lag %s, eta %s" % (t["phase"], len(pts), t["lag-bytes"], t["eta"]))
PY
pass "the dashboard in Chromium shows the live phase and polled /status repeatedly"

if [ -n "${PGSHIFT_BUILD_DIR:-}" ]; then SHOT_DIR=$PGSHIFT_BUILD_DIR/artifacts; else SHOT_DIR=$WORK; fi
mkdir -p "$SHOT_DIR" || fail "mkdir $SHOT_DIR"
SHOT=$(cd "$SHOT_DIR" && pwd)/dashboard.png
rm -f "$SHOT"
chrome --virtual-time-budget=8000 --window-size=1200,900 --screenshot="$SHOT" "$BASE/" >/dev/null ||
  fail "chromium --screenshot: $(tail -5 "$WORK/chrome.err")"
python3 - "$SHOT" <<'PY' || fail "screenshot $SHOT"
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR", "not a PNG"
w, h = struct.unpack(">II", b[16:24])
assert (w, h) == (1200, 900) and len(b) > 20000, (w, h, len(b))
PY
pass "screenshot: $SHOT"

wait "$LOAD_PID" || fail "load: $(cat "$WORK/load.log")"
wait_applied pgshift_dash 60
same_rows d d_new
# /status serves the snapshot of the last stats tick (every 2 s), which may
# predate the last batch: the slot is confirmed as soon as it commits.
load_counted() {
  get "$BASE/status" "$WORK/status2.json" >/dev/null || fail "GET /status after the load"
  python3 - "$WORK/status2.json" 2>/dev/null <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["applied_changes"] >= 4000 and s["tables"][0]["changes_applied"] >= 4000, s
PY
}
poll 10 load_counted || fail "/status 10 s after the load: $(cat "$WORK/status2.json")"
pass "the load is applied and counted in /status"

stop_run
# The page with /status gone: the same page from a server without /status.
mkdir -p "$WORK/www" && cp "$WORK/page.html" "$WORK/www/index.html"
PORT2=$(free_port) || fail "no free port"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$PORT2" >"$WORK/www.log" 2>&1 &
RUN_PIDS+=("$!")
page_served() { get "http://127.0.0.1:$PORT2/" /dev/null >/dev/null 2>&1; }
wait_for 10 "python3 -m http.server to serve the page on $PORT2" page_served
chrome --virtual-time-budget=3000 --dump-dom "http://127.0.0.1:$PORT2/" >"$WORK/dom-err.html" ||
  fail "chromium --dump-dom (no /status)"
python3 - "$WORK/dom-err.html" <<'PY' || fail "error state: $(grep -o '<div id="error"[^<]*' "$WORK/dom-err.html")"
import re, sys
d = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'<div id="error"([^>]*)>([^<]*)<', d)
assert m and "hidden" not in m.group(1), m and m.group(1)
assert "Cannot fetch /status" in m.group(2) and "stopped" in m.group(2), m.group(2)
assert re.search(r'<body[^>]*class="[^"]*stale', d), "body not marked stale"
PY
pass "without /status the dashboard shows the error banner"
finish
