#!/usr/bin/env bash
# Make a CI machine able to run vhrun: /dev/fuse, user namespaces (when
# the job is not root), patchelf and a CPython for vhrun's own builder.
# Idempotent; does nothing that is already in place. Uses sudo when not
# root (GitHub's runners have passwordless sudo), apt-get when available.
set -euo pipefail

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "prepare-host: need root for: $*" >&2; return 1
    fi
}

need=()
command -v patchelf >/dev/null || need+=(patchelf)
command -v python3 >/dev/null || need+=(python3)
[ -e /dev/fuse ] || need+=(fuse3)
# Debian's python3 ships ensurepip (which the builder uses) in python3-venv.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip' 2>/dev/null; then
    need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "prepare-host: installing ${need[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || as_root modprobe fuse || true

if [ "$(id -u)" != 0 ]; then
    # Without root, vhrun runs in a user namespace: it needs /dev/fuse
    # usable by this user and unprivileged user namespaces, which Ubuntu
    # 24.04 restricts through AppArmor.
    [ -r /dev/fuse ] && [ -w /dev/fuse ] || as_root chmod 0666 /dev/fuse
    knob=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
    if [ "$(cat "$knob" 2>/dev/null || echo 0)" = 1 ]; then
        as_root sysctl -q -w kernel.apparmor_restrict_unprivileged_userns=0
    fi
fi
echo "prepare-host: ok"
