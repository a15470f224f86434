#!/usr/bin/env bash
# Run a robot with vhrun in a CI job: build its environment unless the
# cache brought it, run the task, and leave the run's statistics next to
# the robot's artifacts (uploaded with them).
#   run-robot.sh ROBOT_DIR [TASK]
# The task's exit code is the step's.
set -euo pipefail
robot=${1:?usage: run-robot.sh ROBOT_DIR [TASK]}
task=${2:-}
yaml=$robot/robot.yaml

# A no-op when the catalog is there (restored from the cache).
vhrun build -r "$yaml"

artifacts=$(vhrun vars -r "$yaml" | sed -n 's/^export ROBOT_ARTIFACTS=//p' | tail -n 1)
mkdir -p "${artifacts:=$robot/output}"
vhrun run -r "$yaml" ${task:+-t "$task"} --stats --stats-json "$artifacts/vhrun-stats.json"
