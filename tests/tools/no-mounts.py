#!/usr/bin/env python3
"""Run a command under a seccomp filter that refuses unshare, setns, mount
and umount2 with EPERM, as Docker's and Kubernetes' default profiles do
(x86_64; other architectures pass unfiltered). Usage: no-mounts.py CMD ARGS...
"""
import ctypes
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
AUDIT_ARCH_X86_64 = 0xC000003E
ALLOW = 0x7FFF0000
ERRNO_EPERM = 0x00050000 | 1
LD_ABS, JEQ, RET = 0x20, 0x15, 0x06
UNSHARE, SETNS, MOUNT, UMOUNT2 = 272, 308, 165, 166

prog = [
    (LD_ABS, 0, 0, 4),  # arch
    (JEQ, 0, 6, AUDIT_ARCH_X86_64),  # not x86_64: allow (index 8)
    (LD_ABS, 0, 0, 0),  # syscall number
    (JEQ, 5, 0, UNSHARE),  # -> 9
    (JEQ, 4, 0, SETNS),
    (JEQ, 3, 0, MOUNT),
    (JEQ, 2, 0, UMOUNT2),
    (RET, 0, 0, ALLOW),  # 7
    (RET, 0, 0, ALLOW),  # 8
    (RET, 0, 0, ERRNO_EPERM),  # 9
]
raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(raw)


class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


libc = ctypes.CDLL(None, use_errno=True)
fprog = Fprog(len(prog), ctypes.addressof(buf))
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit("no-mounts.py: PR_SET_NO_NEW_PRIVS: %s" % os.strerror(ctypes.get_errno()))
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit("no-mounts.py: PR_SET_SECCOMP: %s" % os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
