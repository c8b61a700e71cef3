#!/bin/bash
# Redis commands per idle run_job (one call at a time), built-in runner for all types.
# usage: idle_cmds.sh <hero-supervisor binary> <calls>
set -e
BIN=$1; N=${2:-200}
D=$(mktemp -d)
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --daemonize yes --pidfile $D/r.pid >/dev/null
sleep 0.3
PORT=$((20000 + RANDOM % 20000))
$BIN serve --listen 127.0.0.1:$PORT --redis-url "redis+unix://$D/r.sock" >$D/log 2>&1 &
SP=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$PORT/v1/runtime && break; sleep 0.2; done
call() { curl -s http://127.0.0.1:$PORT -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"run_job","params":["1","SAL"]}' >/dev/null; }
for i in $(seq 20); do call; done
sleep 1
redis-cli -s $D/r.sock CONFIG RESETSTAT >/dev/null
for i in $(seq $N); do call; done
sleep 0.5
redis-cli -s $D/r.sock INFO commandstats | tr -d '\r' | grep cmdstat | awk -F'[:=,]' -v n=$N '{printf "%-22s %8.2f per call\n", $1, $3/n}'
kill $SP; wait $SP 2>/dev/null || true
kill $(cat $D/r.pid); rm -rf $D
