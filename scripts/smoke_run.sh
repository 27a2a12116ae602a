#!/usr/bin/env bash
# Smoke test of the README's run command (`make run`) on the embedded default.
#
# With DATABASE_URL / REDIS_URL unset, `make run` must start the embedded
# PostgreSQL and Redis, serve /readyz and the sign-in page, and on Ctrl-C leave
# nothing behind: no process it started, nothing listening on the port, no
# embedded database or broker. A second round kills the web server and checks
# that the supervisor then stops everything and exits non-zero.
#
# Honours PRIMORO_LOCAL_DIR / PRIMORO_LOCAL_REDIS_PORT (where the embedded
# services live) like the project does. SMOKE_PORT (8765), SMOKE_TIMEOUT (180 s),
# SMOKE_BANNER_TIMEOUT (30 s).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${SMOKE_PORT:-8765}
TIMEOUT=${SMOKE_TIMEOUT:-180}
STOP_TIMEOUT=${SMOKE_STOP_TIMEOUT:-60}
BANNER_TIMEOUT=${SMOKE_BANNER_TIMEOUT:-30}
LOG_DIR=${SMOKE_LOG_DIR:-artifacts}
PY=.venv/bin/python

unset DATABASE_URL DATABASE_URL_FILE REDIS_URL REDIS_URL_FILE
export PORT
mkdir -p "$LOG_DIR"
[ -x "$PY" ] || make venv

MAKE_PID=""
LOG=""
STATUS=0

say() { echo "smoke: $*" >&2; }

fail() {
    say "FAILED: $*"
    if [ -n "$LOG" ] && [ -f "$LOG" ]; then
        say "last lines of $LOG:"
        tail -n 80 "$LOG" | sed 's/^/    /' >&2
    fi
    exit 1
}

http_status() {
    "$PY" - "$1" <<'EOF'
import sys
import urllib.error
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except OSError:
    print(0)
EOF
}

port_listening() {
    "$PY" -c 'import socket, sys
with socket.socket() as s:
    s.settimeout(0.5)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}

embedded_running() {
    # Prints e.g. "postgres=False redis=False"; exit 0 when either is up.
    "$PY" -c 'import sys
from primoro_payments import localservices
state = localservices.running()
print(" ".join(f"{name}={up}" for name, up in state.items()))
sys.exit(0 if any(state.values()) else 1)' 2>/dev/null
}

child_pids() {
    # The processes scripts/run.py started, as it logged them ("started web pid=123: ...").
    sed -n 's/^started [a-z_-]* pid=\([0-9]*\):.*/\1/p' "$LOG" 2>/dev/null || true
}

alive() { kill -0 "$1" 2>/dev/null; }

cleanup() {
    # Only on failure: stop what this script started, by process id / group.
    if [ -n "$MAKE_PID" ] && alive "$MAKE_PID"; then
        kill -TERM -- "-$MAKE_PID" 2>/dev/null || true
        for _ in $(seq 1 15); do alive "$MAKE_PID" || break; sleep 1; done
        kill -KILL -- "-$MAKE_PID" 2>/dev/null || true
    fi
    for pid in $(child_pids); do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if embedded_running >/dev/null; then
        "$PY" -c 'from primoro_payments import localservices; localservices.stop_all()' || true
    fi
}
trap cleanup EXIT

start_run() {
    LOG="$LOG_DIR/smoke-run-$1.log"
    say "starting 'make run' on port $PORT (log: $LOG)"
    set -m # its own process group, so a signal can reach the whole job like Ctrl-C does
    make run </dev/null >"$LOG" 2>&1 &
    MAKE_PID=$!
    set +m
}

wait_until_ready() {
    local started=$SECONDS ready="" login=""
    while [ $((SECONDS - started)) -lt "$TIMEOUT" ]; do
        alive "$MAKE_PID" || fail "'make run' exited before it was ready"
        [ -n "$ready" ] || { [ "$(http_status "http://127.0.0.1:$PORT/readyz")" = 200 ] && ready=yes; }
        if [ -n "$ready" ] && [ "$(http_status "http://127.0.0.1:$PORT/accounts/login/")" = 200 ]; then
            login=yes
            break
        fi
        sleep 2
    done
    [ -n "$login" ] || fail "no 200 from /readyz and /accounts/login/ within $TIMEOUT s"
    say "ready after $((SECONDS - started)) s: /readyz and /accounts/login/ answer 200"
}

# The supervisor prints its banner after its own /readyz check, which may come a
# moment after ours: give it BANNER_TIMEOUT seconds to appear in the log.
wait_for_log() {
    local started=$SECONDS
    until grep -q "$1" "$LOG"; do
        [ $((SECONDS - started)) -lt "$BANNER_TIMEOUT" ] || return 1
        alive "$MAKE_PID" || return 1
        sleep 1
    done
}

# Waits for make to exit; sets STATUS to its exit status.
wait_for_exit() {
    local started=$SECONDS
    while alive "$MAKE_PID"; do
        [ $((SECONDS - started)) -lt "$STOP_TIMEOUT" ] || fail "'make run' still running after $STOP_TIMEOUT s"
        sleep 1
    done
    STATUS=0
    wait "$MAKE_PID" || STATUS=$?
    MAKE_PID=""
}

check_nothing_left() {
    local pids pid state
    pids=$(child_pids)
    [ -n "$pids" ] || fail "the log names no started processes"
    for pid in $pids; do
        alive "$pid" && fail "process $pid started by make run is still alive"
    done
    ! port_listening "$PORT" || fail "something still listens on port $PORT"
    if state=$(embedded_running); then
        fail "embedded services still running: $state"
    fi
    # The supervisor's own lines are the unprefixed ones.
    ! grep -q "^Traceback" "$LOG" || fail "the supervisor printed a traceback"
    say "nothing left behind: processes $(echo "$pids" | tr '\n' ' ')gone, port $PORT free, $state"
}

# --- preconditions ----------------------------------------------------------
! port_listening "$PORT" || fail "port $PORT is already in use"
if state=$(embedded_running); then
    fail "embedded services are already running ($state): stop them first, or set PRIMORO_LOCAL_DIR"
fi

# --- round 1: Ctrl-C stops everything ------------------------------------------
start_run 1
wait_until_ready
wait_for_log "Demo logins" || fail "the demo logins were not printed"
say "sending SIGINT to the process group (Ctrl-C)"
kill -INT -- "-$MAKE_PID"
wait_for_exit
grep -q "Stopping (signal received)" "$LOG" || fail "the supervisor did not report the signal"
say "'make run' exited (status $STATUS) after Ctrl-C"
check_nothing_left

# --- round 2: a dying child stops everything, exit non-zero -----------------------
start_run 2
wait_until_ready
web_pid=$(sed -n 's/^started web pid=\([0-9]*\):.*/\1/p' "$LOG")
[ -n "$web_pid" ] || fail "no web pid in the log"
say "killing the web server (pid $web_pid) with SIGKILL"
kill -KILL "$web_pid"
wait_for_exit
[ "$STATUS" != 0 ] || fail "'make run' exited 0 after its web server died"
grep -q "web exited with code" "$LOG" || fail "the supervisor did not report the dead child"
say "'make run' exited with status $STATUS after its web server died"
check_nothing_left

trap - EXIT
say "OK"
