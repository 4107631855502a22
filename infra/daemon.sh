# Sourced by the engine set-up scripts. start_daemon DIR LOG COMMAND...: starts a long-lived
# service in a session of its own, working in DIR (engines' helpers write files such as "oom"
# into it), its output appended to LOG, holding none of the caller's file descriptors. The
# shell that starts it execs it, so nothing is left waiting on it: whoever reads the set-up
# script's output (`$(...)`, execFileSync, a CI runner's pipe) sees it end when the script does.
start_daemon() {
  local dir=$1 log=$2
  shift 2
  mkdir -p "$dir"
  (
    cd "$dir"
    for fd in $(ls "/proc/$BASHPID/fd"); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
    exec setsid "$@"
  ) >>"$log" 2>&1 </dev/null &
}
