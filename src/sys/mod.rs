//! The only place in vhrun with `unsafe` code and raw syscalls.
//!
//! Everything here has a safe API; nix's safe wrappers are used everywhere
//! else (mount, unshare, prctl, signalfd, pipes). What is left for
//! this module is what nix cannot offer safely:
//! - [`fork`]: a raw `clone(2)` that works as `fork` but can also create a
//!   PID namespace, from a process that already runs threads;
//! - [`exec`]: `execve` over argv/envp arrays prepared before forking, so
//!   the child allocates nothing;
//! - [`watchdog`]: the fork of `vhrun mount`'s unmount watchdog;
//! - [`mountinfo`], [`nsprobe`]: reading mounts, probing namespaces;
//! - [`signal`]: resetting a disposition, `sigwaitinfo` with the sender's
//!   `si_code`, and `kill` of real-time signals nix's `Signal` cannot name.
//! - [`wait`]: `waitpid` keeping statuses nix cannot represent.
//! - [`mmap`]: a read-only mapping of a whole file vhrun wrote read-only
//!   and never rewrites (the tree indexes).
//! - [`fdpass`]: namespace descriptors sent over a Unix socket (the warm
//!   server hands its namespaces to runs).
//! - [`handover`]: a live FUSE connection handed to the next server (its
//!   descriptor under a fuser session, the passthrough ids it holds).
//! - [`rlimit`]: the open-files limit a FUSE server or a run raises for
//!   itself.
//! - [`priority`]: nice and I/O class of a background thread (the warm
//!   server building a kernel image).
//! - [`startup`]: what std's runtime setup did before `main` that vhrun
//!   still needs (it starts without it: see src/main.rs), the arguments
//!   among it.
//! - [`arena`]: the global allocator: a static arena for a run's start,
//!   then mimalloc (musl's malloc maps and unmaps a group at a time).
//!
//! Code that runs in a forked child of a multi-threaded process may only
//! make system calls and touch memory prepared before the fork: another
//! thread may have held the allocator's lock at the moment of the fork.
//!
//! The crate denies `unsafe_code` everywhere but here; here every unsafe
//! block and impl says why it is sound (`// SAFETY:`), and an invariant
//! the caller must keep is an `unsafe fn`'s `# Safety` section, private to
//! this module (one exception: [`startup::as_std_does`], which `main.rs`
//! calls with the `argv` the C start hands it).

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arena;
pub mod exec;
pub mod fdpass;
pub mod fork;
pub mod handover;
pub mod mmap;
pub mod mountinfo;
pub mod nsprobe;
pub mod priority;
pub mod rlimit;
pub mod signal;
pub mod startup;
pub mod wait;
pub mod watchdog;
