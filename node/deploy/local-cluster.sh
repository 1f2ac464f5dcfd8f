#!/usr/bin/env bash
# A local three-replica chorus cluster from node-a.toml, node-b.toml and
# node-c.toml beside this script (README.md there tells the whole story).
#
#   local-cluster.sh start  [STATE_DIR]  generate what is missing (keys, PSK,
#                                        API token), write the configs,
#                                        start the replicas, wait until each
#                                        is ready (GET /v1/ready)
#   local-cluster.sh stop   [STATE_DIR]  SIGTERM each replica in turn (it
#                                        announces a planned restart to the
#                                        others) and wait until it exits
#   local-cluster.sh status [STATE_DIR]  each replica's process and readiness
#
# Environment:
#   CHORUS_BIN            the chorus binary (default: `chorus` on PATH)
#   CHORUS_STATE_DIR      the state directory when no STATE_DIR is given
#                         (default: $XDG_STATE_HOME/chorus-local-cluster,
#                         else ~/.local/state/chorus-local-cluster)
#   CHORUS_BASE_PORT      APIs on BASE, BASE+1, BASE+2; replication on
#                         BASE+10, BASE+11, BASE+12 (default 7070: node-a's
#                         API is the CLI's default)
#   CHORUS_READY_TIMEOUT  seconds to wait for readiness (default 60)
#   CHORUS_STOP_TIMEOUT   seconds to wait for each replica to exit (default 30)
#
# Everything generated (keys, secrets, configs with the secrets in them,
# stores, logs, pid files) lives in the state directory, which must be
# outside the repository. The replicas bind loopback only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
nodes=(a b c)

usage() {
  echo "usage: $0 start|stop|status [STATE_DIR]" >&2
  exit 2
}

fail() {
  echo "local-cluster: $*" >&2
  exit 1
}

mode=${1:-}
[ $# -le 2 ] || usage
case $mode in start | stop | status) ;; *) usage ;; esac
state=${2:-${CHORUS_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/chorus-local-cluster}}
bin=${CHORUS_BIN:-chorus}
base=${CHORUS_BASE_PORT:-7070}
ready_timeout=${CHORUS_READY_TIMEOUT:-60}
stop_timeout=${CHORUS_STOP_TIMEOUT:-30}

# The generated configs are the replicas' whole configuration: a CHORUS_*
# variable left in the environment (CHORUS_API_TOKEN for the CLI, say)
# would override a key of every replica (docs/operations.md), so none
# reaches them.
while IFS= read -r var; do
  case $var in CHORUS_*) unset "$var" ;; esac
done < <(compgen -e)

is_number() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }
if ! is_number "$base" || [ "$base" -lt 1024 ] || [ "$base" -gt 65523 ]; then
  fail "CHORUS_BASE_PORT must be a port from 1024 to 65523 (BASE+12 is used), not '$base'"
fi
is_number "$ready_timeout" || fail "CHORUS_READY_TIMEOUT must be a number of seconds"
is_number "$stop_timeout" || fail "CHORUS_STOP_TIMEOUT must be a number of seconds"

# The absolute path of $1, whose last components may not exist yet.
absolute() {
  local dir=$1 rest=""
  case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
  while [ ! -d "$dir" ]; do
    rest=/$(basename "$dir")$rest
    dir=$(dirname "$dir")
  done
  printf '%s%s\n' "$(cd "$dir" && pwd -P)" "$rest"
}

state=$(absolute "$state")
# Only a checkout has secrets to keep out; a copy of the script elsewhere
# has no repository around it.
[ ! -e "$repo/.git" ] || case $state/ in
  "$repo"/*) fail "the state directory $state is inside the repository; its keys and secrets must never be committed: pick one outside" ;;
esac
case $state in
  # It is written into TOML strings: keep them plain.
  *[\"\\]* | *[[:cntrl:]]*) fail "the state directory must not contain quotes, backslashes or control characters" ;;
esac

api_port() { echo $((base + $1)); }
p2p_port() { echo $((base + 10 + $1)); }

# Whether pid file $1 names a live replica started with config $2. A pid
# may have been reused, and a replica that exited may linger as a zombie
# (whose command line is empty) under a parent that does not reap: both
# count as not running.
running_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  is_number "$pid" || return 1
  # /proc rather than ps: procps is not on every minimal system.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "run --config $2" || return 1
  echo "$pid"
}

ready() {
  curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$(api_port "$1")/v1/ready" 2>/dev/null
}

# 64 hex characters from the kernel's random source.
secret_hex() {
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

stop_node() {
  local i=$1 n=${nodes[$1]} pid waited=0
  local conf=$state/node-$n.toml pidfile=$state/node-$n.pid
  if ! pid=$(running_pid "$pidfile" "$conf"); then
    rm -f "$pidfile"
    echo "node-$n: not running"
    return 0
  fi
  kill -TERM "$pid"
  while running_pid "$pidfile" "$conf" >/dev/null; do
    if [ "$waited" -ge $((stop_timeout * 10)) ]; then
      echo "node-$n (pid $pid) did not exit within ${stop_timeout}s of SIGTERM; see $state/node-$n.log" >&2
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
  echo "node-$n: stopped (on SIGTERM it announced a restart to the others)"
}

stop_all() {
  local i status=0
  # One at a time, so that each departure is acknowledged by replicas
  # that are still up.
  for i in 2 1 0; do
    stop_node "$i" || status=1
  done
  return "$status"
}

start() {
  command -v "$bin" >/dev/null 2>&1 || fail "no chorus binary '$bin': set CHORUS_BIN"
  command -v curl >/dev/null 2>&1 || fail "curl is needed to check readiness"
  # Keys, secrets and configs: readable by their owner only.
  umask 077
  mkdir -p "$state"
  mkdir -p "$state/secrets"
  [ -s "$state/secrets/psk" ] || secret_hex >"$state/secrets/psk"
  [ -s "$state/secrets/api-token" ] || secret_hex >"$state/secrets/api-token"
  local psk token
  psk=$(cat "$state/secrets/psk")
  token=$(cat "$state/secrets/api-token")
  [[ $psk =~ ^[0-9a-fA-F]{64}$ ]] || fail "$state/secrets/psk must hold 64 hex characters"
  [[ $token =~ ^[A-Za-z0-9._~+/=-]+$ ]] || fail "$state/secrets/api-token must be one word of URL-safe characters"

  local i n key
  local -a ids
  for i in 0 1 2; do
    n=${nodes[$i]}
    mkdir -p "$state/node-$n"
    key=$state/node-$n/node.key
    [ -e "$key" ] || "$bin" keygen --out "$key" >/dev/null
    ids[i]=$("$bin" id "$key")
  done

  local template text conf
  for i in 0 1 2; do
    n=${nodes[$i]}
    template=$here/node-$n.toml
    text=$(<"$template")
    text=${text//@STATE_DIR@/"$state"}
    text=${text//@PSK@/"$psk"}
    text=${text//@API_TOKEN@/"$token"}
    local j N
    for j in 0 1 2; do
      N=${nodes[$j]^^}
      text=${text//@PEER_ID_$N@/"${ids[j]}"}
      text=${text//@API_PORT_$N@/"$(api_port "$j")"}
      text=${text//@P2P_PORT_$N@/"$(p2p_port "$j")"}
    done
    if [[ $text =~ @[A-Z_]+@ ]]; then
      fail "$template: unknown placeholder ${BASH_REMATCH[0]}"
    fi
    conf=$state/node-$n.toml
    printf '%s\n' "$text" >"$conf"
    "$bin" config check "$conf" >/dev/null
  done

  # Request logs at INFO would be mostly this script's readiness polls.
  export RUST_LOG=${RUST_LOG:-info,libp2p=warn,tower_http=warn}
  local -a started=()
  local pid
  for i in 0 1 2; do
    n=${nodes[$i]}
    conf=$state/node-$n.toml
    if pid=$(running_pid "$state/node-$n.pid" "$conf"); then
      echo "node-$n: already running (pid $pid)"
      continue
    fi
    # nohup: the replicas outlive this script and the terminal it ran in.
    nohup "$bin" run --config "$conf" </dev/null >"$state/node-$n.log" 2>&1 &
    echo $! >"$state/node-$n.pid"
    started+=("$i")
  done

  # Each is ready once it sees a majority of the cluster, so all three are
  # started before any is waited for.
  local deadline=$((SECONDS + ready_timeout))
  for i in 0 1 2; do
    n=${nodes[$i]}
    until ready "$i"; do
      if ! running_pid "$state/node-$n.pid" "$state/node-$n.toml" >/dev/null; then
        echo "node-$n exited; the end of $state/node-$n.log:" >&2
        tail -n 20 "$state/node-$n.log" >&2 || true
        for j in "${started[@]}"; do stop_node "$j" >&2 || true; done
        exit 1
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "node-$n is not ready after ${ready_timeout}s; see $state/node-$n.log" >&2
        for j in "${started[@]}"; do stop_node "$j" >&2 || true; done
        exit 1
      fi
      sleep 0.2
    done
    echo "node-$n: ready, API http://127.0.0.1:$(api_port "$i"), peer id ${ids[i]}"
  done
  echo "state: $state (stop with: $0 stop '$state')"
  echo "CLI:   export CHORUS_API_TOKEN=\$(cat '$state/secrets/api-token'); chorus --api http://127.0.0.1:$(api_port 0) nodes"
}

status() {
  local i n pid all=0
  for i in 0 1 2; do
    n=${nodes[$i]}
    if ! pid=$(running_pid "$state/node-$n.pid" "$state/node-$n.toml"); then
      echo "node-$n: not running"
      all=1
    elif ready "$i"; then
      echo "node-$n: running (pid $pid), ready, API http://127.0.0.1:$(api_port "$i")"
    else
      echo "node-$n: running (pid $pid), not ready"
      all=1
    fi
  done
  return "$all"
}

case $mode in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
esac
