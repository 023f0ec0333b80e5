//! Assembles the process: tiers, lock, origin gateway and proxy, as pingora services.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use log::info;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};

use crate::admin::Admin;
use crate::config::{Config, SharedConfig};
use crate::proxy::RentCache;
use crate::storage::{MemoryTier, RedisKeeper, RedisTier, TieredStorage};
use crate::upstream::{self, FailureBoard, Gateway, Secret, Throttle};

/// Handles to what the cache services share, for the parts of the program that inspect them.
pub struct Assembly {
    pub config: SharedConfig,
    pub memory: Arc<MemoryTier>,
    pub storage: &'static TieredStorage,
}

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

/// Adds the origin gateway and the caching proxy (on `config.server.listen`) to `server`.
pub fn add_cache_services(server: &mut Server, config: Config) -> Assembly {
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
        Arc::new(RedisTier::new(r))
    });
    if let Some(r) = &redis {
        let keeper = RedisKeeper::new(r.clone(), memory.clone());
        server.add_service(pingora::services::background::background_service(
            "redis keeper",
            keeper,
        ));
    }
    let storage: &'static TieredStorage =
        Box::leak(Box::new(TieredStorage::new(memory.clone(), redis.clone())));
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
    let shared: SharedConfig = Arc::new(ArcSwap::from_pointee(config));

    let board = Arc::new(FailureBoard::default());
    let socket = upstream::socket_path();
    let throttle = Arc::new(Throttle::new(shared.load().upstream.max_concurrent));
    let mut gateway = Gateway::new(
        shared.clone(),
        token,
        board.clone(),
        redis,
        throttle.clone(),
    )
    .service(&socket);
    gateway.threads = Some(1);
    server.add_service(gateway);

    let proxy = RentCache::new(
        shared.clone(),
        storage,
        lock,
        board,
        throttle,
        &socket,
        max_object,
    );
    let mut service =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, proxy, "rentcache");
    for addr in &listen {
        service.add_tcp(addr);
        info!("rentcache listening on http://{addr}");
    }
    server.add_service(service);

    let admin_listen = shared.load().admin.listen.clone();
    server.add_service(Admin::new(shared.clone(), storage).service(&admin_listen));
    info!("admin listening on http://{admin_listen}");
    Assembly {
        config: shared,
        memory,
        storage,
    }
}

/// Runs `server` until SIGINT/SIGTERM.
pub fn run(server: Server) {
    server.run(RunArgs::default());
}
