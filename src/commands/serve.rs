use crate::cli::ServeArgs;
use crate::error::{Error, Result};
use crate::hololib::Locations;
use crate::lower::fuse::PassthroughMode;
use crate::lower::server::daemon::{self, ServeConfig};
use std::time::Duration;

/// `vhrun __serve`: a catalog's warm server (see `crate::lower::server`).
pub fn run(a: &ServeArgs) -> Result<i32> {
    crate::sys::fdpass::close_inherited();
    let locations = Locations::from_env();
    let switches = super::switches::Switches::from_env();
    let origin = match &a.tree.origin {
        Some(url) => Some((
            url.clone(),
            a.tree.lazy_batch.parse().map_err(Error::Usage)?,
        )),
        None => None,
    };
    daemon::serve(&ServeConfig {
        home: locations.home,
        robocorp_home: locations.robocorp_home,
        origin,
        key: a.key.clone(),
        catalog: a.tree.catalog.clone(),
        hololib: a.tree.hololib.clone(),
        blobs: a.tree.blobs.clone(),
        target_name: a.tree.target.clone(),
        shown_as: a.shown_as.clone(),
        idle: Duration::try_from_secs_f64(a.idle).unwrap_or(Duration::from_secs(60)),
        passthrough: if a.no_passthrough {
            PassthroughMode::Off
        } else {
            PassthroughMode::Auto
        },
        image: switches.lower().image,
        takeover: a.takeover,
        keeper: switches.takeover(),
    })
}

/// `vhrun __keep`: a warm server's keeper (see `crate::lower::server::keeper`).
pub fn keep() -> Result<i32> {
    crate::lower::server::keeper::keep()
}
