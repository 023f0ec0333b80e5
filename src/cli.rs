//! Command line: `serve` (default), `check`, `simulate`, `demo`, `thumbnail`, `advise`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::{server, simulator};

#[derive(Parser, Debug)]
#[command(
    name = "rentcache",
    version,
    about = "Caching reverse proxy for the Rentman API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` options, when no subcommand is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the caching proxy (the default).
    Serve(ServeArgs),
    /// Validate a config file: exit 0 with a summary, or 1 with every error.
    Check(CheckArgs),
    /// Run the Rentman simulator alone.
    Simulate(simulator::SimOptions),
    /// Run the simulator and the proxy in front of it on loopback ports (no token needed).
    Demo(DemoArgs),
    /// Make one media variant of each JPEG file, as `/media/VARIANT/FILE` does, and print
    /// one JSON line per file with the time it took (bench/media.py uses it).
    Thumbnail(ThumbnailArgs),
    /// Print a running instance's TTL advice (GET /advice on its admin listener). Nothing is
    /// changed: the advice is for the operator to apply, or not.
    Advise(AdviseArgs),
}

#[derive(Args, Debug)]
struct ThumbnailArgs {
    /// Largest width of the upright picture.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// 1-100.
    #[arg(long, default_value_t = 80)]
    quality: u8,
    /// Encode WebP instead of JPEG.
    #[arg(long)]
    webp: bool,
    /// Make each variant this many times (one line each).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Write each variant into this directory (under the file's name).
    #[arg(long)]
    out: Option<PathBuf>,
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct AdviseArgs {
    /// The admin listener, e.g. http://127.0.0.1:9091
    #[arg(long = "admin", default_value = "http://127.0.0.1:9091")]
    admin: String,
    /// Environment variable holding the admin token.
    #[arg(long = "token-env", default_value = "RENTCACHE_ADMIN_TOKEN")]
    token_env: String,
    /// Print the JSON as received.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Config file.
    #[arg(short = 'c', long = "config", default_value = "conf/rentcache.yaml")]
    config: PathBuf,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Config file to validate.
    #[arg(short = 'c', long = "config", default_value = "conf/rentcache.yaml")]
    config: PathBuf,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Port of the proxy.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of the simulated Rentman API.
    #[arg(long, default_value_t = 8081)]
    sim_port: u16,
    /// Port of the admin listener (health, readiness, purge).
    #[arg(long, default_value_t = 9091)]
    admin_port: u16,
    /// Median simulated Rentman latency in milliseconds.
    #[arg(long, default_value_t = 350)]
    latency_ms: u64,
    /// Port of the demo agent website (it calls rentcache from the browser).
    #[arg(long, default_value_t = 8082)]
    site_port: u16,
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env).try_init();
}

/// Parses the command line, runs the chosen subcommand and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve.config),
        Some(Command::Serve(args)) => serve(&args.config),
        Some(Command::Check(args)) => check(&args.config),
        Some(Command::Simulate(opts)) => simulator::run(opts),
        Some(Command::Demo(args)) => demo(args),
        Some(Command::Thumbnail(args)) => thumbnail(&args),
        Some(Command::Advise(args)) => advise(&args),
    }
}

fn thumbnail(args: &ThumbnailArgs) -> i32 {
    use crate::imaging::{make_variant, Format, Spec};
    let spec = Spec {
        width: args.width,
        quality: args.quality.clamp(1, 100),
        format: if args.webp {
            Format::Webp
        } else {
            Format::Jpeg
        },
        max_pixels: 50_000_000,
        max_scans: 100,
    };
    let mut failed = 0;
    for path in &args.files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        for _ in 0..args.repeat.max(1) {
            let started = std::time::Instant::now();
            let made = make_variant(&bytes, &spec);
            let us = started.elapsed().as_secs_f64() * 1e6;
            match made {
                Ok(m) => {
                    println!(
                        "{}",
                        serde_json::json!({"file": path.display().to_string(), "us": us,
                            "bytes": m.bytes.len(), "width": m.width, "height": m.height})
                    );
                    if let (Some(dir), Some(name)) = (&args.out, path.file_name()) {
                        if let Err(e) = std::fs::write(dir.join(name), &m.bytes) {
                            eprintln!("{}: {e}", dir.display());
                            failed += 1;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    failed += 1;
                    break;
                }
            }
        }
    }
    i32::from(failed > 0)
}

fn load(path: &Path) -> Result<Config, i32> {
    config::load_file_caught(path).map_err(|e| {
        eprintln!("{e}");
        eprintln!(
            "{}: {} error(s); nothing started",
            path.display(),
            e.errors.len()
        );
        1
    })
}

fn serve(path: &Path) -> i32 {
    init_logging();
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::reload::keep_sighup_from_killing();
    let mut server = server::new_server(&config);
    server::add_cache_services(&mut server, config, Some(path.to_path_buf()));
    server::run(server);
    0
}

fn check(path: &Path) -> i32 {
    match load(path) {
        Ok(c) => {
            println!(
                "{}: OK: {} routes ({}), listening on {}, upstream {}, memory {} MiB",
                path.display(),
                c.routes.len(),
                c.routes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                c.server.listen.join(", "),
                c.upstream.base_url,
                c.memory.max_bytes >> 20
            );
            for w in c.warnings() {
                eprintln!("{}: warning: {w}", path.display());
            }
            0
        }
        Err(code) => code,
    }
}

/// The shipped Rentman routes, pointed at the local simulator on loopback.
fn demo_config(args: &DemoArgs) -> Result<Config, config::ConfigErrors> {
    let text = include_str!("../conf/rentcache.yaml")
        .replace(
            "listen: [\"0.0.0.0:8080\"]",
            &format!("listen: [\"127.0.0.1:{}\"]", args.port),
        )
        .replace(
            "base_url: https://www.rentman.online",
            &format!("base_url: http://127.0.0.1:{}", args.sim_port),
        )
        .replace(
            "listen: \"127.0.0.1:9091\"",
            &format!("listen: \"127.0.0.1:{}\"", args.admin_port),
        )
        // The demo site calls rentcache from the browser.
        .replace(
            "allowed_origins: []",
            &format!(
                "allowed_origins: [\"http://127.0.0.1:{0}\", \"http://localhost:{0}\"]",
                args.site_port
            ),
        );
    config::parse_str(&text, server::DEMO_SOURCE)
}

/// Simulator options as if given on the command line (so defaults stay in one place).
fn sim_options(flags: &[&str]) -> simulator::SimOptions {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        options: simulator::SimOptions,
    }
    let argv = std::iter::once("simulate").chain(flags.iter().copied());
    Wrapper::parse_from(argv).options
}

fn demo(args: DemoArgs) -> i32 {
    init_logging();
    let config = match demo_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the built-in demo config is invalid (a bug):\n{e}");
            return 1;
        }
    };
    let mut server = server::new_server(&config);
    let sim = simulator::Simulator::new(sim_options(&[
        "--port",
        &args.sim_port.to_string(),
        "--latency-ms",
        &args.latency_ms.to_string(),
    ]));
    server.add_service(sim.service());
    server::add_cache_services(&mut server, config, None);
    let base = format!("http://127.0.0.1:{}", args.port);
    let site = format!("127.0.0.1:{}", args.site_port);
    server.add_service(crate::demo_site::DemoSite::new(&base).service(&site));
    println!("rentcache demo: the Rentman simulator on 127.0.0.1:{} (median latency {} ms), the cache in front of it.", args.sim_port, args.latency_ms);
    println!("Try (run each twice: MISS after the simulated latency, then HIT at once):");
    for path in [
        "/propertyadvertising.php?rob=sale&limit=10&noimage=1",
        "/propertyadvertising.php?propref=1&noimage=1&utm_source=demo",
        "/propertymedia.php?propref=1",
    ] {
        println!("  curl -si '{base}{path}' | head -20");
    }
    println!("Warmed at start-up (HIT the first time; conf `warm:`):");
    println!("  curl -si '{base}/propertyadvertising.php?featured=1&noimage=1' | head -20");
    println!(
        "Simulator counters: curl -s http://127.0.0.1:{}/__sim/stats",
        args.sim_port
    );
    println!("An agent's website built on it, calling rentcache from the browser: http://{site}/");
    println!("Stop with Ctrl-C.");
    server::run(server);
    0
}

fn advise(args: &AdviseArgs) -> i32 {
    let token = std::env::var(&args.token_env).ok();
    let body = match crate::admin::client::get_json(&args.admin, "/advice", token.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("rentcache advise: {e}");
            return 1;
        }
    };
    if args.json {
        println!("{body:#}");
    } else {
        print!("{}", crate::admin::client::show_advice(&body));
    }
    0
}
