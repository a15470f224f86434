//! A metadata-only EROFS image, in the composefs manner: directories,
//! symlinks and file attributes live in the image; a regular file's bytes
//! do not. Each non-empty file is a sparse chunk-based inode carrying
//! `trusted.overlay.metacopy` and `trusted.overlay.redirect`, so an
//! overlayfs mounted with `metacopy=on` and the blob store as a data-only
//! lower layer (`lowerdir=<image>::<data>`) reads it from the file the
//! redirect names. The kernel then serves the whole environment with no
//! process in the data path (`image.rs` builds and mounts it).

// The format types are zerocopy derives: bytes in and out with no
// `unsafe` here, which this keeps so.
#![forbid(unsafe_code)]

pub mod format;
pub mod reader;
mod writer;

pub use writer::{write, Body, Entry, ImageError};
