#!/usr/bin/env bash
# Where the time goes at many slow streams: CPU, context switches and the system calls of each
# proxy process (sluicegate per chain, and nginx) over one `loadtest streams` round, per
# delivered event. Needs perf with syscall tracepoints (root, or perf_event_paranoid <= -1).
#
#   cargo build --release -p sluicegate-benches --bin loadtest
#   bash benches/scripts/wakeups.sh --chain none --chain none@shared --chain example:redact
#
# Prints one line per process: its command, then each counter divided by the events it
# delivered (streams x rate x seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
streams=1000 rate=10 seconds=6
loadtest=${LOADTEST:-target/release/loadtest}
events=$((streams * rate * seconds))
out=$(mktemp -d)
"$loadtest" streams --streams "$streams" --rate "$rate" --seconds "$seconds" --rounds 1 "$@" > "$out/loadtest.txt" &
runner=$!
# The proxies and nginx start before the round; attach to each once all are up.
expected=$(( $(grep -o -- '--chain' <<< "$*" | wc -l) ))
for _ in $(seq 1 600); do
    proxies=$(pgrep -f "loadtest proxy" || true)
    workers=$(pgrep -f "nginx: worker" || true)
    if [ "$(wc -w <<< "$proxies")" -ge "$expected" ] && [ -n "$workers" ]; then break; fi
    sleep 0.1
done
counters=task-clock,context-switches,cpu-migrations,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait
perfs=()
for pid in $proxies nginx; do
    if [ "$pid" = nginx ]; then
        pid=$(tr '\n' ',' <<< "$workers" | sed 's/,$//')
        name=nginx
    else
        name=$(tr '\0' ' ' < "/proc/$pid/cmdline" | awk '{print $NF}')
    fi
    perf stat -x, -e "$counters" -p "$pid" -o "$out/perf-$name.csv" 2> /dev/null &
    perfs+=($!)
done
wait "$runner"
kill -INT "${perfs[@]}" 2> /dev/null || true
wait "${perfs[@]}" 2> /dev/null || true
cat "$out/loadtest.txt"
echo
echo "per delivered event ($events events each):"
for file in "$out"/perf-*.csv; do
    name=${file#"$out"/perf-}
    awk -F, -v name="${name%.csv}" -v events="$events" '
        $3 != "" && $1 ~ /^[0-9.]+$/ {
            n = $3; sub("syscalls:sys_enter_", "", n); v = $1 / events
            if (n == "task-clock") { n = "cpu_us"; v = v * 1000 }  # perf reports milliseconds
            row = row sprintf(" %s %.3f", n, v)
        }
        END { print name ":" row }' "$file"
done
rm -rf "$out"
