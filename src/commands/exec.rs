use super::switches::Switches;
use crate::cli::ExecArgs;
use crate::error::Result;
use crate::hololib::layout::Locations;
use crate::paths::absolute;
use crate::run::ExecOptions;
use crate::sandbox::{self, Mounted, SandboxSpec};

pub fn run(args: &ExecArgs) -> Result<i32> {
    if let (Some(lower), Some(env_path)) = (&args.lower_dir, &args.env_path) {
        return exec_over_dir(args, &absolute(lower), &absolute(env_path));
    }
    let switches = Switches::from_env();
    let robot = crate::run::RobotOptions {
        lazy: switches.lazy(args.sandbox.lazy)?,
        ..args.robot.options()
    };
    let opts = ExecOptions {
        robot,
        catalog: args.catalog.clone(),
        command: args.command.clone(),
        sandbox: crate::run::SandboxOptions {
            overlay_size: switches.overlay_size()?,
            ..args.sandbox.options()
        },
        lower: switches.lower_for_run(args.sandbox.mode)?,
    };
    crate::run::exec(Locations::from_env(), &opts)
}

/// `vhrun exec --lower-dir DIR --env-path PATH -- CMD`: the sandbox over a
/// plain directory, with vhrun's own environment (tests, debugging).
fn exec_over_dir(
    args: &ExecArgs,
    lower: &std::path::Path,
    env_path: &std::path::Path,
) -> Result<i32> {
    let locations = Locations::from_env();
    let mut commands: Vec<Vec<std::ffi::OsString>> = args
        .pre_sh
        .iter()
        .map(|script| vec!["sh".into(), "-c".into(), script.into()])
        .collect();
    commands.push(args.command.iter().map(Into::into).collect());
    let mut spec = SandboxSpec::new(locations.home.runs(), env_path.to_path_buf(), commands);
    spec.share_pids = args.sandbox.share_pids;
    spec.keep_overlay = args.sandbox.keep_overlay.as_deref().map(absolute);
    spec.overlay_size = Switches::from_env().overlay_size()?;
    spec.readonly_paths = args.ro_paths.iter().map(|p| absolute(p)).collect();
    spec.writable_paths = args.rw_paths.iter().map(|p| absolute(p)).collect();
    let bind = crate::lower::plain_dir(lower.to_path_buf());
    let threads = args.busy_threads;
    let ended = sandbox::run_sandboxed(&spec, move |target| {
        let bound = bind(target)?;
        Ok(Mounted {
            guard: BusyThreads::start(threads),
            data_layers: bound.data_layers,
            kernel_served: false,
        })
    });
    Ok(ended.outcome?.code())
}

/// Threads that allocate and free in a loop until dropped: a stand-in for
/// FUSE workers when testing that nothing after the fork needs a lock
/// another thread may hold.
struct BusyThreads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl BusyThreads {
    fn start(n: usize) -> BusyThreads {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..n)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        keep.push(vec![i as u8; 64 + keep.len() % 4096]);
                        if keep.len() > 256 {
                            keep.clear();
                        }
                    }
                })
            })
            .collect();
        BusyThreads { stop, handles }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
