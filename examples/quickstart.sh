#!/usr/bin/env bash
# The quick start of the documentation (docs/tutorials/quickstart.md), as one
# script: three nodes on 127.0.0.2-4, a key written and read with redis-cli,
# `peer-ring status`, one node killed with kill -9 and started again.
#
#   bash examples/quickstart.sh          # needs peer-ring and redis-cli on PATH
#
# PREFIX (default 127.0.0) moves the nodes to PREFIX.2-4; WORKDIR (default a
# fresh temporary directory) holds the node logs. Every node this script
# starts is stopped when it exits, by the PID it started.
set -euo pipefail

PREFIX=${PREFIX:-127.0.0}
WORKDIR=${WORKDIR:-$(mktemp -d)}
N1=$PREFIX.2 N2=$PREFIX.3 N3=$PREFIX.4
declare -A PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Wait until a node answers PING on its Redis port (it does once it has joined
# and synced the partitions it owns), for at most 30 s.
wait_ready() {
  for _ in $(seq 300); do
    if [ "$(redis-cli -h "$1" -p 6379 ping 2>/dev/null)" = PONG ]; then return 0; fi
    sleep 0.1
  done
  echo "node $1 did not become ready; see $WORKDIR" >&2
  return 1
}

# Wait until `peer-ring status` on node $1 shows member $2 in state $3.
wait_state() {
  for _ in $(seq 300); do
    if peer-ring status --node "$1:7400" --json 2>/dev/null \
        | grep -A6 "\"id\": \"$2\"" | grep -q "\"state\": \"$3\""; then
      return 0
    fi
    sleep 0.1
  done
  echo "$2 never became $3 as seen by $1" >&2
  return 1
}

# --8<-- [start:start]
start_node() {  # start_node ID IP: one node, its log in $WORKDIR/ID.log
  peer-ring node --id "$1" --listen "$2:7400" --seeds "$N1:7400,$N2:7400" \
    --resp "$2:6379" --http "$2:8080" --preset local >"$WORKDIR/$1.log" 2>&1 &
  PIDS[$1]=$!
}
start_node n1 "$N1"
start_node n2 "$N2"
start_node n3 "$N3"
# --8<-- [end:start]
for ip in "$N1" "$N2" "$N3"; do wait_ready "$ip"; done
echo "three nodes ready (logs in $WORKDIR)"

# --8<-- [start:write]
redis-cli -h "$N1" -p 6379 set greeting "hello, ring"
redis-cli -h "$N3" -p 6379 get greeting      # any node answers for any key
# --8<-- [end:write]

# --8<-- [start:status]
peer-ring status --node "$N1:7400"
# --8<-- [end:status]

# --8<-- [start:kill]
kill -9 "${PIDS[n3]}"                          # n3 crashes
# --8<-- [end:kill]
wait "${PIDS[n3]}" 2>/dev/null || true
unset 'PIDS[n3]'
wait_state "$N1" n3 down
# --8<-- [start:degraded]
peer-ring status --node "$N1:7400"             # n3: down, still in the ring
redis-cli -h "$N1" -p 6379 set greeting "hello again"   # W=2 of N=3: still works
# --8<-- [end:degraded]

# --8<-- [start:restart]
start_node n3 "$N3"                            # same id: same partitions
# --8<-- [end:restart]
wait_ready "$N3"
wait_state "$N1" n3 up
# --8<-- [start:back]
peer-ring status --node "$N1:7400"             # n3: up again
redis-cli -h "$N3" -p 6379 get greeting        # the write it missed
# --8<-- [end:back]
