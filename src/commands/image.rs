//! `vhrun __image`: a catalog's kernel image built in a process of its own,
//! at nice 19 and in the idle I/O class, for a warm server after its first
//! run (`crate::lower::server::daemon`). Its own process: the decoding threads'
//! memory is not the server's to keep, and a failure cannot take the
//! server down. Output goes to the server's log.

use crate::cli::BuildImageArgs;
use crate::error::Result;
use crate::hololib::{Hololib, Locations};
use crate::lower::blobcache::BlobCache;
use crate::lower::image::{self, Image, Prepared};
use crate::sandbox::Identity;
use crate::tree::Tree;

pub fn run(args: &BuildImageArgs) -> Result<i32> {
    crate::sys::priority::background_this_thread();
    let a = &args.tree;
    let home = Locations::from_env().home;
    let tree = Tree::load_indexed(&a.catalog, &home.index())?;
    let blobs = BlobCache::new(Hololib::new(&a.hololib), &a.blobs);
    let id = Identity::current();
    let who = image::For {
        target_name: &a.target,
        uid: id.uid,
        gid: id.gid,
    };
    match Image::prepare(&home, &tree, &blobs, who)? {
        Prepared::Ready(img) => {
            tracing::info!("later runs mount the image {}", img.dir.display())
        }
        Prepared::Unsupported(why) => tracing::info!("no kernel image: {why}"),
    }
    Ok(0)
}
