//! The environment's read-only tree: the overlay's lower layer, and every
//! way vhrun has of providing it.

pub mod blobcache;
pub mod erofs;
pub mod fuse;
pub mod image;
pub mod server;
