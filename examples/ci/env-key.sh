#!/usr/bin/env bash
# Print `key=<blueprint hash>` of a robot's conda.yaml: the catalog a run
# needs, so the right cache key for the hololib (GitHub: append the output
# to "$GITHUB_OUTPUT").
set -euo pipefail
robot=${1:?usage: env-key.sh ROBOT_DIR}
conda=$(sed -n 's/^condaConfigFile:[[:space:]]*//p' "$robot/robot.yaml" | tr -d "\"'")
hash=$(vhrun hash "$robot/${conda:-conda.yaml}" | cut -d' ' -f1)
echo "key=$hash"
