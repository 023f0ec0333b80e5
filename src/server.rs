//! Assembles the process: tiers, lock, origin gateway, proxy, admin listener and the
//! background services (Redis keeper, warmer, config reloader), as pingora services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use log::info;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{Admin, Handles};
use crate::config::{Config, SharedConfig};
use crate::metrics::Metrics;
use crate::proxy::hot::HotKeys;
use crate::proxy::{Front, Parts, RentCache};
use crate::reload::{ReloadService, Reloader};
use crate::storage::{MemoryTier, RedisKeeper, RedisTier, TieredStorage};
use crate::upstream::{self, FailureBoard, Gateway, ReadyWhenAccepting, Secret, Throttle};
use crate::warm::{WarmService, Warmer};

/// A pingora server configured from `config.server`.
pub fn new_server(config: &Config) -> Server {
    let grace = config.server.grace_period.as_secs();
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server
}

/// Adds everything that makes up one rentcache instance to `server`. `config_path` is the
/// file to reload on SIGHUP or change (none for a built-in config).
pub fn add_cache_services(server: &mut Server, config: Config, config_path: Option<PathBuf>) {
    let token = Secret::from_env(&config.upstream.token_env);
    upstream::log_token_state(&config, &token);

    let memory = Arc::new(MemoryTier::new(
        config.memory.max_bytes,
        config.memory.max_object_bytes,
    ));
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
    // A fill holding the lock longer than a whole upstream attempt has died: let others in.
    let lock_age =
        config.upstream.connect_timeout + config.upstream.read_timeout + Duration::from_secs(5);
    let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(lock_age));
    // Larger than every tier's limit: served, never stored.
    let max_object = config
        .redis
        .as_ref()
        .map_or(0, |r| r.max_object_bytes)
        .max(config.memory.max_object_bytes) as usize;
    let listen = config.server.listen.clone();
    let write_buffer = config.server.write_buffer;
    let admin_listen = config.admin.listen.clone();
    let max_concurrent = config.upstream.max_concurrent;
    let shared: SharedConfig = Arc::new(ArcSwap::from_pointee(config));

    let metrics = Arc::new(Metrics::new());
    let throttle = Arc::new(Throttle::new(max_concurrent));
    let board = Arc::new(FailureBoard::default());
    let hot = Arc::new(HotKeys::default());

    let socket = upstream::socket_path();
    let mut gateway = Gateway::new(
        shared.clone(),
        token,
        board.clone(),
        redis,
        throttle.clone(),
        metrics.clone(),
    )
    .service(&socket);
    gateway.threads = Some(1);
    let gateway = server.add_service(ReadyWhenAccepting::new(gateway, socket.clone()));

    let proxy = RentCache::new(Parts {
        config: shared.clone(),
        storage,
        lock,
        board,
        throttle: throttle.clone(),
        metrics: metrics.clone(),
        hot: hot.clone(),
        gateway_socket: socket,
        max_object_bytes: max_object,
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
    // Clients are let in only once the gateway behind every miss accepts connections.
    server.add_service(service).add_dependency(&gateway);

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

    let admin = Admin::new(Handles {
        config: shared,
        storage,
        metrics,
        hot,
        throttle,
        warmer,
        reloader,
    });
    server.add_service(admin.service(&admin_listen));
    info!("admin listening on http://{admin_listen}");
}

/// Runs `server` until SIGINT/SIGTERM.
pub fn run(server: Server) {
    server.run(RunArgs::default());
}
