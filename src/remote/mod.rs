//! Fleets: environments from an rccremote origin (`RCC_REMOTE_ORIGIN`),
//! as rcc's `holotree pull` and the pull rcc makes before a build.
//! [`origin`] is the HTTP client (rcc's headers and network settings,
//! bounded timeouts), [`pull`] the protocol and the import, [`lazy`] the
//! blobs fetched as a lazily served tree's files are first opened, and
//! [`imports`] the package directories a module will import, fetched ahead,
//! and [`compile`] their modules compiled ahead, beside the task;
//! [`inflight`] lets fetches run side by side, each blob fetched once.

pub mod compile;
pub mod imports;
pub mod inflight;
pub mod lazy;
pub mod origin;
pub mod pull;

pub use origin::Origin;
pub use pull::{pull, pull_before_build, PullStats};
