#!/usr/bin/env bash
# End-to-end benchmark of `churnwatch run` through a local broker (figures in BENCHMARKS.md).
#
#   scripts/bench-e2e.sh [--broker mock|tansu] [--customers N] [--days D] [--partitions P]
#                        [--latency-secs S] [--latency-rate R] [--latency-partitions L]
#                        [--probe] [--no-restore] [--keep]
#
# 1. Throughput: the simulator's stream (N customers over D days) is preloaded into the events
#    topic; `churnwatch run` starts and /metrics is sampled every second until every message
#    is processed: events/s end to end, consumer lag over time, and the CPU time of churnwatch
#    and of the broker (their shares of the run's wall-clock time).
# 2. Latency: the simulator then produces at half the measured throughput (or R events/s) for
#    S seconds (`churnwatch simulate --rate`) to a second input topic of L partitions (default
#    4), which churnwatch has consumed from the start; the event-to-decision latency quantiles
#    come from the difference of churnwatch_decision_latency_seconds over that phase, and
#    those of its share up to the poll (churnwatch_poll_latency_seconds) beside them. The
#    simulator shares the machine's cores: it reports the rate it reached. Why a topic of its
#    own, with few partitions: a steady stream arrives in small batches, one message set each,
#    and the mock cluster finds a fetch's offset by walking a partition's message sets from the
#    oldest ("FIXME: Maintain an index", rdkafka_mock.c), for every partition of every fetch.
#    Over 64 partitions that made the broker itself the delay: a bare kcat consumer saw the
#    same latencies as churnwatch (BENCHMARKS.md). Its customers are new to churnwatch (their
#    history is in the other topic's partitions).
#    With --probe, a second phase at the same rate follows with churnwatch stopped (SIGSTOP)
#    and a bare consumer reading the topic instead (examples/latency_probe.rs: librdkafka
#    with churnwatch's consumer settings from the same config, doing nothing with the
#    messages): the latency that
#    the machine, the broker and the load generator leave before any processing.
# 3. Restore: churnwatch is killed with SIGKILL and started again in the same group; its
#    restore time and the customers restored come from churnwatch_restore_* metrics.
#
# Brokers: "mock" is librdkafka's mock cluster in a process of its own (examples/mock_broker.rs;
# it keeps only the newest 5 MiB per partition, so use enough partitions, and its restore
# figures are only meaningful while the changelog fits); "tansu" is installed by
# scripts/install-tansu.sh when missing and keeps everything in memory.
#
# Environment: BENCH_BIN (another churnwatch binary to run, to compare builds; default the one
# built here), FETCH_WAIT_MS (the consumer's fetch.wait.max.ms, default 1), CONSUMER_PROPS
# (more [kafka.properties] lines), and any CHURNWATCH_* override of churnwatch's config (for
# example CHURNWATCH_STATE__CHANGELOG=false to measure without the changelog).
set -euo pipefail

broker=mock
customers=100000
days=14
partitions=64
latency_secs=30
latency_rate=""
latency_partitions=4
restore=1
probe=0
keep=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --broker) broker="$2"; shift 2 ;;
    --customers) customers="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --latency-secs) latency_secs="$2"; shift 2 ;;
    --latency-rate) latency_rate="$2"; shift 2 ;;
    --latency-partitions) latency_partitions="$2"; shift 2 ;;
    --no-restore) restore=0; shift ;;
    --probe) probe=1; shift ;;
    --keep) keep=1; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
cargo build --release --quiet --bin churnwatch --example mock_broker --example latency_probe
cw="${BENCH_BIN:-$PWD/target/release/churnwatch}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  if [[ "$keep" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tck=$(getconf CLK_TCK)
cpu_secs() { awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$1/stat"; }
metrics() { curl -sf "http://$listen/metrics" || true; }
# Sum of every series of metric $1 in the text on stdin.
msum() { awk -v m="$1" '$1==m || index($1, m"{")==1 {s+=$2} END {printf "%.0f", s}'; }
processed() { local t; t="$(metrics)"; echo $(( $(msum churnwatch_events_total <<<"$t") + $(msum churnwatch_events_invalid_total <<<"$t") )); }

events=bench-events
group=bench
live=bench-live
changelog="$group-$events-changelog"
live_changelog="$group-$live-changelog"
case "$broker" in
  mock)
    mkfifo "$work/broker.in"
    target/release/examples/mock_broker "$events:$partitions" bench-alerts:1 bench-dlq:1 \
      "$changelog:$partitions" "$live:$latency_partitions" "$live_changelog:$latency_partitions" \
      <"$work/broker.in" >"$work/broker.out" 2>"$work/broker.err" &
    broker_pid=$!
    pids+=("$broker_pid")
    exec 3>"$work/broker.in"
    for _ in $(seq 50); do [[ -s "$work/broker.out" ]] && break; sleep 0.1; done
    bootstrap="$(head -1 "$work/broker.out")"
    ;;
  tansu)
    tansu="$(scripts/install-tansu.sh)"
    port="$(free_port)"
    bootstrap="127.0.0.1:$port"
    "$tansu" broker --listener-url "tcp://$bootstrap" --advertised-listener-url "tcp://$bootstrap" \
      --storage-engine memory://tansu/ >"$work/broker.err" 2>&1 &
    broker_pid=$!
    pids+=("$broker_pid")
    for _ in $(seq 100); do (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    for t in "$events:$partitions" "$live:$latency_partitions" bench-alerts:1 bench-dlq:1; do
      "$tansu" topic create --broker "tcp://$bootstrap" --partitions "${t##*:}" "${t%:*}" >/dev/null
    done
    ;;
  *) echo "--broker is mock or tansu" >&2; exit 2 ;;
esac
echo "broker: $broker at $bootstrap ($partitions partitions)"

echo "preloading $customers customers over $days days..."
"$cw" simulate --customers "$customers" --days "$days" --brokers "$bootstrap" --topic "$events" \
  >"$work/preload.txt"
total=$(awk '/^events:/ {print $2; exit}' "$work/preload.txt")
echo "preloaded $total messages"

listen="127.0.0.1:$(free_port)"
cat >"$work/churnwatch.toml" <<EOF
[kafka]
brokers = "$bootstrap"
group_id = "$group"
events_topics = ["$events", "$live"]
alerts_topic = "bench-alerts"
dead_letter_topic = "bench-dlq"
statistics_interval_ms = 1000
[kafka.properties]
# The mock cluster answers a fetch only when fetch.wait.max.ms (500 ms by default) has passed,
# where a real broker answers as soon as there is data: keep it short (FETCH_WAIT_MS).
"fetch.wait.max.ms" = "${FETCH_WAIT_MS:-1}"
${CONSUMER_PROPS:-}
[http]
listen = "$listen"
[input]
max_future_skew_secs = 0
idle_partition_timeout_secs = 86400
[log]
level = "warn"
EOF

start_churnwatch() {
  "$cw" run --config "$work/churnwatch.toml" 2>>"$work/churnwatch.err" &
  cw_pid=$!
  pids+=("$cw_pid")
  for _ in $(seq 100); do curl -sf "http://$listen/healthz" >/dev/null && return; sleep 0.1; done
  echo "churnwatch did not start:" >&2; tail "$work/churnwatch.err" >&2; exit 1
}

# 1. Throughput, timed from the first sample with messages processed (the group join and the
# restore are not in it) to the first with all of them; sampled every 0.2 s.
broker_cpu0=$(cpu_secs "$broker_pid")
start_churnwatch
echo "seconds  processed  consumer_lag"
t_start=$(date +%s.%N)
n0=0
t0=""
last_print=0
last_n=-1
last_change=$t_start
while :; do
  sleep 0.2
  now=$(date +%s.%N)
  t="$(metrics)"
  done_n=$(( $(msum churnwatch_events_total <<<"$t") + $(msum churnwatch_events_invalid_total <<<"$t") ))
  if [[ -z "$t0" && "$done_n" -gt 0 ]]; then
    t0=$now; n0=$done_n; cw_cpu0=$(cpu_secs "$cw_pid"); broker_cpu0=$(cpu_secs "$broker_pid")
  fi
  el=$(awk -v a="$t_start" -v b="$now" 'BEGIN {printf "%.1f", b-a}')
  if (( done_n >= total )) || awk -v e="$el" -v l="$last_print" 'BEGIN {exit !(e-l >= 1)}'; then
    printf "%7s %10d %13s\n" "$el" "$done_n" "$(msum churnwatch_consumer_lag <<<"$t")"
    last_print=$el
  fi
  if (( done_n >= total )); then t1=$now; break; fi
  if ! kill -0 "$cw_pid" 2>/dev/null; then echo "churnwatch stopped:" >&2; tail "$work/churnwatch.err" >&2; exit 1; fi
  if (( done_n != last_n )); then last_n=$done_n; last_change=$now; fi
  if [[ -n "$t0" ]] && awk -v a="$last_change" -v b="$now" 'BEGIN {exit !(b-a > 30)}'; then
    # Seen with tansu: a partition's last batch is not served (its ListOffsets under-reports).
    echo "stalled: $done_n of $total messages processed, none for 30 s; figures up to the last progress" >&2
    t1=$last_change
    total=$done_n
    break
  fi
done
cw_cpu=$(awk -v a="$(cpu_secs "$cw_pid")" -v b="$cw_cpu0" 'BEGIN {printf "%.2f", a-b}')
broker_cpu=$(awk -v a="$(cpu_secs "$broker_pid")" -v b="$broker_cpu0" 'BEGIN {printf "%.2f", a-b}')
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b-a}')
rate=$(awk -v n="$((total - n0))" -v w="$wall" 'BEGIN {printf "%.0f", n/w}')
echo
echo "throughput: $((total - n0)) messages in $wall s = $rate events/s end to end (samples 0.2 s apart)"
echo "cpu over those $wall s: churnwatch $cw_cpu s ($(awk -v c="$cw_cpu" -v w="$wall" 'BEGIN {printf "%.0f", 100*c/w}') % of one core)," \
     "broker $broker_cpu s ($(awk -v c="$broker_cpu" -v w="$wall" 'BEGIN {printf "%.0f", 100*c/w}') % of one core)," \
     "on $(nproc) cores"
echo "back-pressure pauses: $(metrics | msum churnwatch_backpressure_pauses_total)," \
     "checkpoints: $(metrics | msum churnwatch_checkpoints_total)"

# 2. Latency at half the throughput.
if (( latency_secs > 0 )); then
  half=${latency_rate:-$(( rate / 2 ))}
  echo
  echo "latency: producing at $half events/s for about $latency_secs s..."
  before="$(metrics | grep -E '^churnwatch_(decision|poll)_latency_seconds_bucket')"
  # Enough simulated days for the phase; the simulator stops at their end.
  per_day=$(awk -v n="$total" -v d="$days" 'BEGIN {print n/d}')
  lat_days=$(awk -v r="$half" -v s="$latency_secs" -v p="$per_day" 'BEGIN {printf "%.3f", r*s/p}')
  # The stream goes on where the preload ended (a jump in event time would make every
  # customer's timers catch up at once, which is not what this phase measures).
  lat_start=$(date -u -d "2026-01-01 + ${days%.*} days" +%Y-%m-%dT%H:%M:%SZ)
  "$cw" simulate --customers "$customers" --days "$lat_days" --seed 2 --start "$lat_start" \
    --brokers "$bootstrap" --topic "$live" --rate "$half" >"$work/latency.txt"
  sleep 2
  all="$(metrics)"
  after="$(grep -E '^churnwatch_(decision|poll)_latency_seconds_bucket' <<<"$all")"
  awk '$1=="churnwatch_checkpoint_duration_seconds_sum" {s=$2} $1=="churnwatch_checkpoint_duration_seconds_count" {c=$2}
       END {printf "checkpoints so far: %d, processing paused %.1f ms each on average\n", c, 1000*s/c}' <<<"$all"
  # Quantiles of one histogram's growth over the phase: decision latency (event timestamp to
  # decision), then its share up to the poll that handed the event to churnwatch (producer,
  # broker, fetch, and the wait in the consumer's queue behind earlier messages).
  quantiles() {
    paste <(grep "^churnwatch_$1_seconds_bucket" <<<"$before") \
          <(grep "^churnwatch_$1_seconds_bucket" <<<"$after") | awk -v what="$2" '
      {
        match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
        n++; les[n] = le; cnt[n] = $4 - $2
      }
      END {
        total = cnt[n]
        printf "%s in the phase: %d\n", what, total
        split("0.5 0.9 0.99 0.999", qs, " ")
        for (k = 1; k <= 4; k++) {
          q = qs[k]; want = q * total; prev_le = 0; prev_c = 0
          for (i = 1; i <= n; i++) {
            if (cnt[i] >= want) {
              if (les[i] == "+Inf") { printf "  p%s > %s s\n", q * 100, les[i-1]; break }
              v = prev_le + (les[i] - prev_le) * (cnt[i] > prev_c ? (want - prev_c) / (cnt[i] - prev_c) : 1)
              printf "%sp%s = %.2f ms (histogram interpolation)\n", (what == "decisions" ? "" : "  "), q * 100, v * 1000; break
            }
            prev_le = les[i]; prev_c = cnt[i]
          }
        }
      }'
  }
  quantiles decision_latency decisions
  quantiles poll_latency "of which, event timestamp to poll"

  if [[ "$probe" == 1 ]]; then
    # The same load again (the stream goes on where the first phase's ended), with churnwatch
    # stopped and a bare consumer timing the messages (it exits 3 s after the last one).
    echo
    echo "probe: churnwatch stopped; a bare consumer reads $live while producing at $half events/s..."
    kill -STOP "$cw_pid"
    probe_start=$(date -u -d "2026-01-01 + ${days%.*} days + $(awk -v d="$lat_days" 'BEGIN {printf "%.0f", d*86400}') seconds" +%Y-%m-%dT%H:%M:%SZ)
    target/release/examples/latency_probe "$work/churnwatch.toml" "$live" >"$work/probe.txt" 2>"$work/probe.err" &
    probe_pid=$!
    pids+=("$probe_pid")
    for _ in $(seq 100); do grep -q '^ready' "$work/probe.txt" 2>/dev/null && break; sleep 0.1; done
    sleep 1 # the partitions' end offsets are resolved
    "$cw" simulate --customers "$customers" --days "$lat_days" --seed 3 --start "$probe_start" \
      --brokers "$bootstrap" --topic "$live" --rate "$half" >"$work/probe-load.txt"
    wait "$probe_pid" || { echo "the probe failed:" >&2; cat "$work/probe.err" >&2; exit 1; }
    echo "bare consumer: $(grep '^messages' "$work/probe.txt")"
    kill -CONT "$cw_pid"
  fi
fi

# 3. Restore after kill -9.
if [[ "$restore" == 1 ]]; then
  tracked=$(metrics | msum churnwatch_customers)
  sleep 2 # one more checkpoint
  kill -9 "$cw_pid"
  wait "$cw_pid" 2>/dev/null || true
  echo
  echo "restore: killed churnwatch (tracking $tracked customers); starting it again..."
  start_churnwatch
  for _ in $(seq 600); do
    t="$(metrics)"
    if [[ "$(msum churnwatch_restore_duration_seconds_count <<<"$t")" -ge 1 && "$(msum churnwatch_restoring_partitions <<<"$t")" == 0 ]]; then break; fi
    sleep 0.5
  done
  t="$(metrics)"
  echo "restored $(msum churnwatch_restored_customers_total <<<"$t") customers from $(msum churnwatch_restore_records_total <<<"$t") changelog records" \
       "in $(awk '$1=="churnwatch_restore_duration_seconds_sum" {printf "%.2f", $2}' <<<"$t") s"
fi
