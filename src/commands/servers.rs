use crate::cli::ServersArgs;
use crate::error::Result;
use crate::hololib::Locations;
use crate::lower::server;

/// `vhrun servers [--stop]`: the warm servers of this `$VHRUN_HOME`.
pub fn run(args: &ServersArgs) -> Result<i32> {
    let home = Locations::from_env().home;
    if args.restart {
        let asked = server::restart(&home);
        let failed = asked.iter().filter(|(_, now)| now.is_none()).count();
        if !crate::logging::quiet() {
            for (l, now) in &asked {
                match now {
                    Some(pid) => eprintln!("vhrun: {}: pid {} -> {pid}", l.key, l.hello.pid),
                    None => eprintln!("vhrun: {}: pid {} did not hand over", l.key, l.hello.pid),
                }
            }
        }
        if failed > 0 {
            return Err(crate::error::Error::unavailable(
                format!("{failed} of {} warm server(s) not restarted", asked.len()),
                "their runs go on with the old vhrun; see the servers' logs in $VHRUN_HOME/servers",
            ));
        }
    }
    let listed = if args.stop {
        server::stop(&home)
    } else {
        server::list(&home)
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).unwrap_or_default()
        );
        return Ok(0);
    }
    if listed.is_empty() {
        if !crate::logging::quiet() {
            eprintln!("vhrun: no warm server running");
        }
        return Ok(0);
    }
    println!(
        "{:<16}  {:>7}  {:>5}  {:>9}  {:>6}  {:<32}  ENVIRONMENT",
        "SERVER", "PID", "RUNS", "TAKEOVERS", "IDLE", "CATALOG"
    );
    for l in &listed {
        let h = &l.hello;
        println!(
            "{:<16}  {:>7}  {:>5}  {:>9}  {:>5}s  {:<32}  {}",
            l.key,
            h.pid,
            h.served,
            h.stats.takeovers,
            h.idle_s,
            h.catalog
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            h.environment.display()
        );
    }
    if args.stop && !crate::logging::quiet() {
        eprintln!(
            "vhrun: asked {} server(s) to stop (each exits once its runs in flight end)",
            listed.len()
        );
    }
    Ok(0)
}
