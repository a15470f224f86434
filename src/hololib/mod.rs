//! The hololib: rcc's content-addressed store of environments.
//!
//! `layout` says where things are, `catalog` what an environment holds,
//! `blob` how contents are encoded; the operations on a store (lift,
//! restore, import/export, check) each have their own module.

pub mod blob;
pub mod catalog;
pub mod check;
pub mod layout;
pub mod lift;
pub mod lock;
pub mod part;
pub mod restore;
pub mod zipio;

pub use catalog::{Catalog, Dir, File};
pub use layout::{Hololib, Locations};
