#!/bin/bash
# fuse-cold.sh BASE PLAIN_NAME MOUNT_NAME HOLOLIB KEY VHRUN_HOME [vhrun mount args...]
#
# Cold first run: empty blob cache and dropped page cache, then one
# `import pandas, numpy, sqlalchemy` from a fresh `vhrun mount` (bytecode
# from a PYTHONPYCACHEPREFIX filled earlier, as the product keeps one), and
# the same import from the plain directory after dropping caches again.
# Same layout as fuse-warm.py (run that first: it fills the bytecode caches).
# Needs root; drops the machine's page cache. VHRUN may name the binary.
set -euo pipefail
BASE=$1; P=$BASE/$2; M=$BASE/$3; HL=$4; K=$5; VH=$6; shift 6
VHRUN=${VHRUN:-vhrun}
export ROBOCORP_HOME=$VH-rh VHRUN_HOME=$VH
mkdir -p "$ROBOCORP_HOME"; [ -L "$ROBOCORP_HOME/hololib" ] || ln -s "$HL" "$ROBOCORP_HOME/hololib"
I="import pandas, numpy, sqlalchemy"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for i in 1 2 3; do
  rm -rf "$VH/blobs"; sync; echo 3 > /proc/sys/vm/drop_caches
  s=$(date +%s%N)
  "$VHRUN" mount "$@" --catalog "$K" "$M" 2>/dev/null &
  while ! grep -q " $M fuse.vhrun" /proc/self/mounts; do sleep 0.001; done
  r=$(ms "$s"); s=$(date +%s%N)
  env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX="$VH-pyc-mount" "$M/bin/python3" -c "$I"
  echo "cold mount $*: ready $r ms, import $(ms "$s") ms"
  umount "$M"; wait
  sync; echo 3 > /proc/sys/vm/drop_caches
  s=$(date +%s%N)
  env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX="$VH-pyc-plain" "$P/bin/python3" -c "$I"
  echo "cold plain: import $(ms "$s") ms"
done
