//! Assembles the process: tiers, the upstream client and fills, the proxy with its front
//! door, the admin listener and the background services (Redis keeper, warmer, config
//! reloader), as pingora services.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use log::{info, warn};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Handles};
use crate::config::{Config, SharedConfig};
use crate::metrics::Metrics;
use crate::proxy::hot::HotKeys;
use crate::proxy::{Fills, Front, Parts, RentCache};
use crate::reload::{ReloadService, Reloader};
use crate::storage::{MemoryTier, RedisKeeper, RedisTier, TieredStorage};
use crate::upstream::{self, Secret, Throttle, Upstream};
use crate::warm::{WarmService, Warmer};

/// The `source` of the demo's built-in config: the one config whose admin API may be open.
pub const DEMO_SOURCE: &str = "built-in demo config";

/// A pingora server configured from `config.server`.
pub fn new_server(config: &Config) -> Server {
    let grace = config.server.grace_period.as_secs();
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        // The connector of pass-through requests trusts what the fills' connector trusts.
        ca_file: config.upstream.ca_file.clone(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server
}

/// Adds everything that makes up one rentcache instance to `server`. `config_path` is the
/// file to reload on SIGHUP or change (none for a built-in config).
pub fn add_cache_services(server: &mut Server, config: Config, config_path: Option<PathBuf>) {
    let demo = config_path.is_none() && config.source == DEMO_SOURCE;
    let token = Secret::from_env(&config.upstream.token_env);
    upstream::log_token_state(&config, &token);

    match &config.memory.body_dir {
        Some(dir) => info!(
            "large bodies (16 KiB and up): unnamed files in {}",
            dir.display()
        ),
        None => info!("large bodies (16 KiB and up): sealed memory files"),
    }
    let memory = Arc::new(
        MemoryTier::new(config.memory.max_bytes, config.memory.max_object_bytes)
            .with_body_dir(config.memory.body_dir.clone()),
    );
    let redis = config.redis.clone().map(|r| {
        info!(
            "shared tier: redis {} (prefix {})",
            r.display_nodes(),
            r.prefix
        );
        RedisTier::new(r)
    });
    let storage: &'static TieredStorage =
        Box::leak(Box::new(TieredStorage::new(memory.clone(), redis.clone())));
    if let Some(r) = &redis {
        let keeper = RedisKeeper::new(r.clone(), memory.clone(), storage.index.clone());
        server.add_service(background_service("redis keeper", keeper));
    }
    let listen = config.server.listen.clone();
    let write_buffer = config.server.write_buffer;
    let tls = config.server.tls.clone();
    let admin_listen = config.admin.listen.clone();
    let max_concurrent = config.upstream.max_concurrent;
    let adaptive = config.upstream.adaptive_concurrency;
    let ca_file = config.upstream.ca_file.clone();
    for w in config.warnings() {
        warn!("{}: {w}", config.source);
    }
    let shared: SharedConfig = Arc::new(ArcSwap::from_pointee(config));

    let metrics = Arc::new(Metrics::new());
    let throttle = Arc::new(Throttle::new(max_concurrent, adaptive));
    let hot = Arc::new(HotKeys::default());
    let upstream = Arc::new(Upstream::new(
        token,
        ca_file.as_deref(),
        throttle.clone(),
        metrics.clone(),
    ));
    let access_log = crate::observe::access_log::AccessLog::start(
        &shared.load().access_log,
        metrics.access_log_dropped.clone(),
    );
    let observer = Arc::new(crate::observe::Observer::new(metrics.clone(), access_log));
    server.add_service(background_service(
        "console",
        crate::observe::targets::ConsoleService {
            observer: observer.clone(),
            config: shared.clone(),
        },
    ));
    let fills = Fills::new(upstream, storage, metrics.clone(), observer.clone());
    let cdn =
        crate::cdn::purger(&shared.load().cdn.purge, metrics.clone()).map(|(queue, service)| {
            storage.purge_outer_caches_with(queue);
            let stats = service.stats();
            server.add_service(background_service("cdn purger", service));
            stats
        });

    let proxy = RentCache::new(Parts {
        config: shared.clone(),
        storage,
        fills,
        metrics: metrics.clone(),
        hot: hot.clone(),
        observer: observer.clone(),
    });
    // The front door answers fresh hits itself and hands everything else to the proxy.
    let mut service = Service::new(
        "rentcache".to_string(),
        Front::new(proxy, &server.configuration),
    );
    for addr in &listen {
        service.add_listener(
            ListenerConfig::tcp(addr.as_str())
                .l4_buffer(L4BufferSettings::default().write(write_buffer)),
        );
        info!("rentcache listening on http://{addr}");
    }
    if let Some(tls) = &tls {
        add_tls_listeners(server, &mut service, tls);
    }
    server.add_service(service);

    let warmer = Arc::new(Warmer::new(shared.clone(), storage, throttle.clone()));
    server.add_service(background_service("warmer", WarmService(warmer.clone())));

    let reloader = config_path.map(|path| {
        let r = Arc::new(Reloader::new(path, shared.clone(), metrics.clone()));
        server.add_service(background_service(
            "config reloader",
            ReloadService(r.clone()),
        ));
        r
    });

    // The demo without an admin token opens the admin API (and the dashboard) on loopback,
    // and says so loudly; a served config never does.
    let demo_open = demo && Secret::from_env(&shared.load().admin.token_env).is_none();
    if demo_open {
        warn!(
            "DEMO MODE: {} is unset, so the admin API and the dashboard at http://{admin_listen}/ are OPEN WITHOUT A TOKEN. Never expose this; set the variable to protect them.",
            shared.load().admin.token_env
        );
    }
    let admin = Admin::new(Handles {
        config: shared,
        storage,
        metrics,
        hot,
        throttle,
        warmer,
        reloader,
        cdn,
        observer,
        demo_open,
    });
    server.add_service(admin.service(&admin_listen));
    info!("admin listening on http://{admin_listen}");
}

/// HTTPS listeners (HTTP/2 by ALPN when enabled) sharing one certificate, reloaded when its
/// files change.
fn add_tls_listeners(server: &mut Server, service: &mut Service<Front>, tls: &crate::config::Tls) {
    let certificates = match crate::tls::Certificates::load(&tls.cert, &tls.key) {
        Ok(c) => c,
        Err(e) => {
            log::error!("no HTTPS listener: {e}");
            return;
        }
    };
    for addr in &tls.listen {
        let mut settings = match TlsSettings::intermediate(&tls.cert, &tls.key) {
            Ok(s) => s,
            Err(e) => {
                log::error!("no HTTPS listener on {addr}: {e}");
                continue;
            }
        };
        settings.set_cert_resolver(certificates.clone());
        if tls.http2 {
            settings.enable_h2();
        }
        service.add_tls_with_settings(addr, None, settings);
        info!(
            "rentcache listening on https://{addr}{}",
            if tls.http2 {
                " (HTTP/2 and HTTP/1.1)"
            } else {
                ""
            }
        );
    }
    server.add_service(background_service(
        "tls certificate reloader",
        crate::tls::TlsReloadService(certificates),
    ));
}

/// Runs `server` until SIGINT/SIGTERM.
pub fn run(server: Server) {
    server.run(RunArgs::default());
}
