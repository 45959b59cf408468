# Shared by the bench/*.sh scripts (sourced, not run): a free 127.0.0.1 port, waiting for a server
# to listen, stopping it by PID (never by name). Needs PY (the Python that runs the probes).
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  local port=$1 pid=$2
  for _ in $(seq 1 300); do
    if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; return 1; }
    sleep 0.05
  done
  echo "server did not start" >&2
  return 1
}

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
