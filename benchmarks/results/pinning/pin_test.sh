#!/usr/bin/env bash
# quiet box: stop every niced process, measure two side-by-side one-seed legs three ways, resume
cd /work/main
PIDS=$(ps -eo pid=,ni= | awk '$2>=10{print $1}')
echo "$(date -u +%T) stopping: $PIDS" > /work/runs/pin/log.txt
kill -STOP $PIDS
sleep 3
run() {  # $1 tag, $2 prefix for process A, $3 prefix for process B, $4 env
  for side in A B; do
    pre=$2; [ $side = B ] && pre=$3
    env $4 $pre .venv/bin/python benchmarks/sweep_cost.py skill --budget laptop --only 'smax_protoss_5_vs_5/qmix' \
      --seeds 1 --leg 8000 --repeats 3 --json /work/runs/pin/$1_$side.json buffer_size=1000 > /work/runs/pin/$1_$side.out 2>&1 &
  done
  wait
  echo "$(date -u +%T) done $1" >> /work/runs/pin/log.txt
}
run alone_unpinned "" "true" "X=1"
run pair_unpinned "" "" "X=1"
run pair_pinned "taskset -c 0" "taskset -c 1" "X=1"
run pair_pinned_1thread "taskset -c 0" "taskset -c 1" "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false"
kill -CONT $PIDS
echo "$(date -u +%T) resumed" >> /work/runs/pin/log.txt
