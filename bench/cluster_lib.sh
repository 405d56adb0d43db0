# Sourced by bench/cluster_faults.sh and bench/cluster_bench.sh: starts, stops, kills,
# pauses and partitions the nodes of a three-node (NODES) Warren or RabbitMQ 3.10.8
# cluster, each node in network namespaces this file creates and removes.
#
# Set before sourcing: KIND (warren | rabbitmq), NODES (default 3), NET (netns | loopback),
# RUN (a directory for data and logs), W (the warren binary, for KIND=warren).
#
# NET=netns: namespaces chaos-n1..N (one node each, address 10.77.0.1<i>/24 on eth0),
#   chaos-cli (the clients, 10.77.0.2) and chaos-hub (the bridge br0 joining them: its port
#   p-n<i> going down isolates node i from everyone). Every node uses the same ports.
# NET=loopback: one namespace chaos-lo, every node on its 127.0.0.1 with its own ports
#   (and its own epmd for RabbitMQ, so nothing of the host's is touched).
# Only these namespaces are made; cl_cleanup kills every process in them and deletes them.

NODES=${NODES:-3}
NET=${NET:-netns}
CL_PFX=chaos
RABBIT_COOKIE=${RABBIT_COOKIE:-WARRENCHAOSCOOKIE}

cl_ns() { if [ "$NET" = netns ]; then echo "$CL_PFX-n$1"; else echo "$CL_PFX-lo"; fi; }
cl_cli_ns() { if [ "$NET" = netns ]; then echo "$CL_PFX-cli"; else echo "$CL_PFX-lo"; fi; }
cl_host() { if [ "$NET" = netns ]; then echo "10.77.0.1$1"; else echo 127.0.0.1; fi; }
cl_amqp() { if [ "$NET" = netns ]; then echo 5672; else echo $((5700 + $1)); fi; }
cl_mgmt() { if [ "$NET" = netns ]; then echo 15672; else echo $((15700 + $1)); fi; }
cl_cport() { if [ "$NET" = netns ]; then echo 25672; else echo $((25700 + $1)); fi; }
# The node's name as the broker reports it (a queue's `leader`).
cl_name() {
  if [ "$KIND" = warren ]; then echo "n$1"
  elif [ "$NET" = netns ]; then echo "n$1@$(cl_host "$1")"
  else echo "n$1@localhost"; fi
}
cl_uri() { echo "amqp://guest:guest@$(cl_host "$1"):$(cl_amqp "$1")/%2f?heartbeat=5"; }
cl_uri_plain() { echo "amqp://guest:guest@$(cl_host "$1"):$(cl_amqp "$1")/%2f"; }
cl_uris() { local i s=""; for i in $(seq 1 "$NODES"); do s="$s${s:+,}$(cl_uri "$i")"; done; echo "$s"; }
cl_cli() { ip netns exec "$(cl_cli_ns)" "$@"; }

# Every namespace we own.
cl_all_ns() {
  if [ "$NET" = netns ]; then
    local i; for i in $(seq 1 "$NODES"); do echo "$CL_PFX-n$i"; done
    echo "$CL_PFX-cli"; echo "$CL_PFX-hub"
  else echo "$CL_PFX-lo"; fi
}

cl_net_up() {
  cl_net_down
  if [ "$NET" = netns ]; then
    ip netns add "$CL_PFX-hub"
    ip -n "$CL_PFX-hub" link set lo up
    ip -n "$CL_PFX-hub" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$CL_PFX-hub" link set br0 up
    local i x addr
    for i in $(seq 1 "$NODES") cli; do
      if [ "$i" = cli ]; then x=cli; addr=10.77.0.2; else x="n$i"; addr=$(cl_host "$i"); fi
      ip netns add "$CL_PFX-$x"
      ip -n "$CL_PFX-$x" link set lo up
      ip -n "$CL_PFX-$x" link add eth0 type veth peer name "p-$x" netns "$CL_PFX-hub"
      ip -n "$CL_PFX-$x" addr add "$addr/24" dev eth0
      ip -n "$CL_PFX-$x" link set eth0 up
      ip -n "$CL_PFX-hub" link set "p-$x" master br0 up
    done
  else
    ip netns add "$CL_PFX-lo"
    ip -n "$CL_PFX-lo" link set lo up
  fi
}

cl_net_down() {
  local ns pid
  for ns in $(cl_all_ns); do
    [ -e "/var/run/netns/$ns" ] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Partition: node i's port on the bridge down (cut off from the other nodes and the clients).
cl_isolate() { ip -n "$CL_PFX-hub" link set "p-n$1" down; }
cl_heal() { ip -n "$CL_PFX-hub" link set "p-n$1" up; }
cl_heal_all() { local i; for i in $(seq 1 "$NODES"); do cl_heal "$i"; done; }

cl_port_open() { cl_cli bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
cl_wait_port() { # host port seconds
  local t; for t in $(seq 1 $(($3 * 5))); do cl_port_open "$1" "$2" && return 0; sleep 0.2; done; return 1
}

# The broker's OS process of node i (the beam for RabbitMQ).
cl_pid() {
  if [ "$KIND" = warren ]; then cat "$RUN/n$1.pid" 2>/dev/null
  else cat "$RUN/n$1/pid" 2>/dev/null; fi
}

cl_start() { # i: start (or restart) node i
  local i=$1 ns; ns=$(cl_ns "$i")
  if [ "$KIND" = warren ]; then
    local members="" j
    for j in $(seq 1 "$NODES"); do members="$members${members:+,}n$j@$(cl_host "$j"):$(cl_cport "$j")"; done
    mkdir -p "$RUN/n$i"
    # In a subshell, so it is no job of the script (no "Killed" notices, no wait on it).
    (ip netns exec "$ns" "$W" --node-name "n$i" --bind "$(cl_host "$i")" --port "$(cl_amqp "$i")" \
      --management-port "$(cl_mgmt "$i")" --cluster-port "$(cl_cport "$i")" --cluster-nodes "$members" \
      --data-dir "$RUN/n$i" --loopback-users "" --log-level "${LOG_LEVEL:-warn}" >>"$RUN/n$i.log" 2>&1 &
      echo $! >"$RUN/n$i.pid")
  else
    local d=$RUN/n$i longname=false
    [ "$NET" = netns ] && longname=true
    mkdir -p "$d/log"
    if [ ! -f "$d/rabbitmq.conf" ]; then
      cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = $(cl_amqp "$i")
management.tcp.port = $(cl_mgmt "$i")
loopback_users = none
EOF
      echo '[rabbitmq_management].' >"$d/enabled_plugins"
    fi
    rm -f "$d/pid"
    chown -R rabbitmq:rabbitmq "$d"
    # rabbitmq-server runs as the rabbitmq user with HOME=/var/lib/rabbitmq: its cookie
    # is the one every node (and rabbitmqctl) shares.
    (ip netns exec "$ns" env RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
      RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_FEATURE_FLAGS_FILE="$d/feature_flags" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins" \
      RABBITMQ_NODENAME="$(cl_name "$i")" RABBITMQ_USE_LONGNAME=$longname \
      RABBITMQ_DIST_PORT="$(cl_cport "$i")" RABBITMQ_PID_FILE="$d/pid" \
      rabbitmq-server >>"$d/out.log" 2>&1 &)
  fi
}

cl_ctl() { # i args...: rabbitmqctl against node i, from its namespace
  local i=$1; shift
  local lf=""; [ "$NET" = netns ] && lf=--longnames
  ip netns exec "$(cl_ns "$i")" rabbitmqctl $lf -n "$(cl_name "$i")" "$@"
}

cl_wait_node() { # i seconds: until its AMQP port and management answer
  cl_wait_port "$(cl_host "$1")" "$(cl_amqp "$1")" "$2" && cl_wait_port "$(cl_host "$1")" "$(cl_mgmt "$1")" "$2"
}

cl_start_all() {
  mkdir -p "$RUN"
  if [ "$KIND" = rabbitmq ]; then
    local c=/var/lib/rabbitmq/.erlang.cookie
    if [ ! -s "$c" ]; then echo "$RABBIT_COOKIE" >"$c"; chown rabbitmq:rabbitmq "$c"; chmod 400 "$c"; fi
  fi
  local i
  for i in $(seq 1 "$NODES"); do cl_start "$i"; done
  for i in $(seq 1 "$NODES"); do
    cl_wait_node "$i" 120 || { echo "node $i did not start" >&2; return 1; }
  done
  if [ "$KIND" = rabbitmq ]; then
    for i in $(seq 2 "$NODES"); do
      { cl_ctl "$i" stop_app && cl_ctl "$i" join_cluster "$(cl_name 1)" && cl_ctl "$i" start_app; } \
        >>"$RUN/rabbitmqctl.log" 2>&1 || { echo "node $i did not join (see $RUN/rabbitmqctl.log)" >&2; return 1; }
    done
    for i in $(seq 1 "$NODES"); do cl_wait_node "$i" 120 || return 1; done
  else
    # The metadata group has a leader once a node reports one.
    local t
    for t in $(seq 1 300); do
      cl_cli curl -s -m 2 -u guest:guest "http://$(cl_host 1):$(cl_mgmt 1)/api/cluster-status" | grep -q '"leader":"n' && break
      sleep 0.2
    done
  fi
}

cl_kill() { local p; p=$(cl_pid "$1"); [ -n "$p" ] && kill -9 "$p" 2>/dev/null; }
cl_pause() { local p; p=$(cl_pid "$1"); [ -n "$p" ] && kill -STOP "$p" 2>/dev/null; }
cl_resume() { local p; p=$(cl_pid "$1"); [ -n "$p" ] && kill -CONT "$p" 2>/dev/null; }
cl_alive() { local p; p=$(cl_pid "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# The node index of queue $1's leader as node $2 (default: the first that answers) reports it; empty if none.
cl_leader() {
  local q=$1 from=${2:-} i name
  for i in ${from:-$(seq 1 "$NODES")}; do
    name=$(cl_cli curl -s -m 2 -u guest:guest "http://$(cl_host "$i"):$(cl_mgmt "$i")/api/queues/%2f/$q" 2>/dev/null \
      | grep -o '"leader":"[^"]*"' | head -1 | cut -d'"' -f4)
    if [ -n "$name" ]; then
      name=${name%%@*}; echo "${name#n}"; return 0
    fi
  done
  return 1
}

cl_cleanup() {
  local i
  for i in $(seq 1 "$NODES"); do cl_resume "$i"; done
  cl_net_down
}
