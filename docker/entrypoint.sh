#!/bin/sh
# The image's entry point: the wait room as a reverse proxy in front of $UPSTREAM
# (WAITROOM_MODE=proxy, the default), the request counter alone (counter: the demo workload) or
# both in one process (demo, as `make run`). It runs `waitroom serve` (the lean mitmproxy master,
# src/waitroom/serve.py), or `mitmdump -s addons/waitroom.py` when WAITROOM_COMMAND=mitmdump (for
# mitmdump's features serve leaves out). Arguments are appended to the command line (e.g.
# `--set flow_detail=1`). Every path can be moved by the environment, so the tests run this very
# script against the repository.
#
#   UPSTREAM           the service to protect, e.g. http://shop.default.svc.cluster.local:8080
#                      (required for proxy and demo; the counter never contacts it)
#   WAITROOM_COMMAND   default serve; or mitmdump
#   LISTEN_HOST        default 0.0.0.0          LISTEN_PORT  default 8080
#   WAITROOM_CONFIG    default /etc/waitroom/waitroom.yaml (a ConfigMap mounted as a volume;
#                      it is reloaded when its bytes change)
#   KEEP_HOST_HEADER   default false: the upstream gets its own host name in Host, which is what a
#                      mesh sidecar routes by; true passes the visitor's Host (rooms with match.host)
#   BODY_SIZE_LIMIT    default 10m: mitmproxy refuses larger request bodies with 413 before buffering
#   TCP_TIMEOUT        default 120: seconds of silence after which mitmproxy closes a connection
#   FLOW_DETAIL        default 0: no line per request (metrics and decision logs say more)
#   WORKERS            default 1: `waitroom serve --workers`, proxy processes sharing the port (one
#                      core each; more than 1 needs a shared store); auto: the cores the container
#                      may use (its CPU quota, and WAITROOM_CPUS, which the chart sets from the CPU
#                      request). Not for WAITROOM_COMMAND=mitmdump.
#   MITMPROXY_CONFDIR  default /tmp/mitmproxy: mitmproxy writes its CA there at start, so it must be
#                      writable (an emptyDir at /tmp when the root filesystem is read-only)
#   WAITROOM_HOME      default /app: where addons/ lives
#   WAITROOM, MITMDUMP the commands, default waitroom and mitmdump (on PATH)
#   WAITROOM_SECRET, WAITROOM_ADMIN_TOKEN, WAITROOM_JWT_SECRET: read by the addon, never logged.
set -eu

mode=${WAITROOM_MODE:-proxy}
home=${WAITROOM_HOME:-/app}

case "$mode" in
  proxy|demo)
    if [ -z "${UPSTREAM:-}" ]; then
      echo "entrypoint: set UPSTREAM to the service to protect, e.g. http://shop:8080" >&2
      exit 64
    fi ;;
  counter)
    UPSTREAM=${UPSTREAM:-http://127.0.0.1:9} ;;  # the counter answers everything itself
  *)
    echo "entrypoint: WAITROOM_MODE must be proxy, counter or demo (got '$mode')" >&2
    exit 64 ;;
esac

confdir=${MITMPROXY_CONFDIR:-/tmp/mitmproxy}
mkdir -p "$confdir"

case "${WAITROOM_COMMAND:-serve}" in
  serve|mitmdump) ;;
  *)
    echo "entrypoint: WAITROOM_COMMAND must be serve or mitmdump (got '${WAITROOM_COMMAND}')" >&2
    exit 64 ;;
esac
workers=${WORKERS:-1}
if [ "$workers" != 1 ] && [ "${WAITROOM_COMMAND:-serve}" != serve ]; then
  echo "entrypoint: WORKERS=$workers needs WAITROOM_COMMAND=serve (mitmdump runs one process)" >&2
  exit 64
fi
config=${WAITROOM_CONFIG:-/etc/waitroom/waitroom.yaml}
if [ "$mode" = demo ]; then
  config=${WAITROOM_CONFIG:-$home/config/waitroom.yaml}
fi

# Prepended, so that the container's own arguments come last and can override any of these.
# Under serve the wait room is built in; mitmdump loads it as a script.
case "${WAITROOM_COMMAND:-serve}/$mode" in
  serve/proxy)      set -- --workers "$workers" --set "waitroom_config=$config" "$@" ;;
  serve/counter)    set -- --no-waitroom -s "$home/addons/counter.py" "$@" ;;
  serve/demo)       set -- --set "waitroom_config=$config" -s "$home/addons/counter.py" "$@" ;;
  mitmdump/proxy)   set -- -s "$home/addons/waitroom.py" --set "waitroom_config=$config" "$@" ;;
  mitmdump/counter) set -- -s "$home/addons/counter.py" "$@" ;;
  mitmdump/demo)    set -- -s "$home/addons/waitroom.py" --set "waitroom_config=$config" \
                      -s "$home/addons/counter.py" "$@" ;;
esac
set -- \
  --mode "reverse:$UPSTREAM" \
  --listen-host "${LISTEN_HOST:-0.0.0.0}" \
  --listen-port "${LISTEN_PORT:-8080}" \
  --set connection_strategy=lazy \
  --set block_global=false \
  --set "keep_host_header=${KEEP_HOST_HEADER:-false}" \
  --set "body_size_limit=${BODY_SIZE_LIMIT:-10m}" \
  --set "tcp_timeout=${TCP_TIMEOUT:-120}" \
  --set "flow_detail=${FLOW_DETAIL:-0}" \
  --set "confdir=$confdir" \
  "$@"

# exec: the proxy becomes the container's main process and gets SIGTERM itself (the wait room's drain).
if [ "${WAITROOM_COMMAND:-serve}" = mitmdump ]; then
  exec "${MITMDUMP:-mitmdump}" "$@"
fi
exec "${WAITROOM:-waitroom}" serve "$@"
