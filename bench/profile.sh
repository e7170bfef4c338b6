#!/usr/bin/env bash
# Profile streamserver under fan-out load with py-spy.
#
# Starts `twistd -n streamserver` on a free loopback port, loads it with
# bench/fanout.py (VIEWERS fast viewers of a KBPS kbit/s synthetic stream), and
# after the warm-up records SECONDS of py-spy samples twice: collapsed stacks
# (--format raw, summarized by bench/profile_top.py and loadable in
# https://www.speedscope.app) and a flame graph SVG.  py-spy runs without
# --idle, so the shares are shares of the server's busy time.
#
#   bench/profile.sh [VIEWERS=400] [SECONDS=30] [KBPS=1000] [OUTDIR=bench/results]
#
# Needs py-spy in the venv (.venv/bin/pip install py-spy) and ptrace rights on
# the server (root, or kernel.yama.ptrace_scope=0).  Extra `twistd streamserver`
# arguments go in $SERVER_ARGS.  Set SRC=DIR to run the server from another source
# tree (put first on PYTHONPATH), as bench/compare.py --src does, and TWISTD=PATH to
# start it with another twistd (a .py script runs with the venv's Python), e.g.
# bench/experiments/twistd_direct_write.py.  STEM_SUFFIX is appended to the file names.
# NATIVE=1 records the first (collapsed) py-spy profile with --native, so the C
# frames under a Python line (the socket call, the kernel entry) are split out.
# PERF=1 also records SECONDS of `perf record -g` of the server (after py-spy)
# and writes $STEM.perf.txt: the shares by shared object (Python, libc, the
# kernel) and the top symbols, so the syscall and the loopback delivery charged to
# the sender show apart from the interpreter.
# PROTOCOL=http-flv makes the viewers play HTTP-FLV (the server then listens on a
# loopback HTTP port too, as bench/compare.py starts it) and adds -http-flv to the names.
set -euo pipefail

VIEWERS=${1:-400}
SECONDS_PROFILED=${2:-30}
KBPS=${3:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUTDIR=${4:-$HERE/results}
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PYSPY=$VENV/bin/py-spy
WARMUP=15
PROTOCOL=${PROTOCOL:-rtmp}
if [[ -n "${SRC:-}" ]]; then
    export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
fi

mkdir -p "$OUTDIR"
FREE_PORT='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
PORT=$("$PY" -c "$FREE_PORT")
HTTP=(--no-http)
VIA_HTTP=()
STEM=$OUTDIR/profile-$VIEWERS-$KBPS
if [[ "$PROTOCOL" == http-flv ]]; then
    HTTP_PORT=$("$PY" -c "$FREE_PORT")
    HTTP=(--http "tcp:$HTTP_PORT:interface=127.0.0.1" --http-play-wait 60)
    VIA_HTTP=(--http-port "$HTTP_PORT")
    STEM=$STEM-http-flv
elif [[ "$PROTOCOL" != rtmp ]]; then
    echo "PROTOCOL must be rtmp or http-flv, not $PROTOCOL" >&2
    exit 2
fi
STEM=$STEM${STEM_SUFFIX:-}

TWISTD=${TWISTD:-$VENV/bin/twistd}
LAUNCH=("$TWISTD")
[[ "$TWISTD" == *.py ]] && LAUNCH=("$PY" "$TWISTD")
# shellcheck disable=SC2086
"${LAUNCH[@]}" -n --pidfile= --logfile="$STEM.server.log" streamserver \
    --rtmp "tcp:$PORT:interface=127.0.0.1" "${HTTP[@]}" ${SERVER_ARGS:-} >"$STEM.server.stdio" 2>&1 &
SERVER=$!
FANOUT=
cleanup() {
    [[ -n "$FANOUT" ]] && kill "$FANOUT" 2>/dev/null || true
    kill "$SERVER" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 100); do
    if "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

"$PY" "$HERE/fanout.py" --url "rtmp://127.0.0.1:$PORT/live/profile" --viewers "$VIEWERS" \
    --bitrate "$KBPS" --warmup "$WARMUP" --duration $((3 * SECONDS_PROFILED + 10)) \
    --server-pid "$SERVER" --label "profile $PROTOCOL $VIEWERS@$KBPS" \
    --protocol "$PROTOCOL" "${VIA_HTTP[@]}" \
    >"$STEM.fanout.json" 2>"$STEM.fanout.stderr" &
FANOUT=$!

# wait for the publisher, then for the warm-up
for _ in $(seq 600); do
    grep -q "publishing" "$STEM.fanout.stderr" 2>/dev/null && break
    sleep 0.1
done
sleep "$WARMUP"

NATIVE_ARG=()
[[ "${NATIVE:-0}" == 1 ]] && NATIVE_ARG=(--native)
"$PYSPY" record --pid "$SERVER" --duration "$SECONDS_PROFILED" --rate 100 --nolineno \
    "${NATIVE_ARG[@]}" --format raw --output "$STEM.txt"
if [[ "${PERF:-0}" == 1 ]]; then
    perf record -F 499 -g -p "$SERVER" -o "$STEM.perf.data" -- sleep "$SECONDS_PROFILED" \
        >/dev/null 2>&1
    {
        echo "# perf: shares of the server's samples by shared object"
        perf report -i "$STEM.perf.data" --no-children --sort dso --stdio -g none \
            2>/dev/null | grep -v '^$' | head -25 || true
        echo "# perf: top symbols"
        perf report -i "$STEM.perf.data" --no-children --sort dso,sym --stdio -g none \
            2>/dev/null | grep -v '^$' | head -60 || true
    } >"$STEM.perf.txt"
    rm -f "$STEM.perf.data"
fi
"$PYSPY" record --pid "$SERVER" --duration "$SECONDS_PROFILED" --rate 100 \
    --format flamegraph --output "$STEM.svg"
wait "$FANOUT"
FANOUT=

"$PY" "$HERE/profile_top.py" "$STEM.txt" --top 15 | tee "$STEM.top.md"
echo "fanout: $(cat "$STEM.fanout.json")"
echo "wrote $STEM.txt (collapsed stacks), $STEM.svg (flame graph), $STEM.top.md" >&2
