//! The shared tier: one Redis (or Redis Cluster) for every rentcache instance.
//!
//! Redis failing is normal operation, not an error path: while it is down every call returns
//! at once (a request never waits on a dead Redis), a background keeper probes it and
//! reconnects, and each change of state is logged once. Every call that does reach Redis is
//! bounded by `op_timeout`.
//!
//! Keys: `{prefix}{<hash>}:e` holds the entry, `{prefix}{<hash>}:l` the fill lease. The braces
//! are a cluster hash tag, so an entry, its lease and its temporary write key share a slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use parking_lot::{Mutex, RwLock};
use pingora::cache::key::HashBinary;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult};
use tokio::sync::oneshot;

use super::codec;
use super::{Admission, Entry, Tier, TierError, TierStats};
use crate::config::{Redis, RedisNodes};

/// Body bytes sent per round trip when a large entry is written piece by piece.
const WRITE_BATCH: usize = 1 << 20;

/// A connection to a single server or to a cluster; both are cheap to clone.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn pipe<T: FromRedisValue>(&mut self, p: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }

    async fn script<T: FromRedisValue>(
        &mut self,
        s: &redis::Script,
        key: &str,
        arg: &str,
    ) -> RedisResult<T> {
        let mut inv = s.key(key);
        inv.arg(arg);
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }
}

/// What a lease attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This caller may fetch; the value identifies it for renewal and release. `stored`:
    /// the times of the entry Redis held for the key at that moment.
    Acquired {
        value: String,
        stored: Option<super::EntryTimes>,
    },
    /// Another fill is running, started at this time (ms since the epoch, holder's clock).
    HeldSince(u64),
    /// The last fill failed recently; what another instance recorded (see `LeaseState`).
    Failed(FailedFill),
    /// Redis cannot arbitrate right now: fetch without a lease.
    Unavailable,
}

/// What the lease key of an entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Free,
    /// A fill started at this time (ms since the epoch, holder's clock).
    Held(u64),
    /// The last fill failed; until the key expires (the failure memo), nobody fetches again.
    Failed(FailedFill),
}

/// A failed fill as one instance tells the others: the failure's code, and how long the
/// upstream asked to be left alone (for 429s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFill {
    pub code: String,
    pub retry_after_ms: Option<u64>,
}

/// Lease values of failed fills start with this; held leases start with an instance id.
const FAILED: &str = "fail:";

fn lease_state(value: Option<String>) -> LeaseState {
    let Some(v) = value else {
        return LeaseState::Free;
    };
    if let Some(rest) = v.strip_prefix(FAILED) {
        let (code, after) = rest.split_once(':').unwrap_or((rest, ""));
        return LeaseState::Failed(FailedFill {
            code: code.to_string(),
            retry_after_ms: after.parse().ok(),
        });
    }
    // An unreadable value reads as a lease taken at 0: bounded like any other wait.
    LeaseState::Held(
        v.rsplit(':')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    )
}

/// Connections opened on the runtime that uses them (`None` while one is being opened). A
/// connection's I/O is driven by a task of the runtime that opened it: a request served
/// through the keeper's connection wakes the keeper's thread twice per round trip, which on a
/// busy core costs more than the round trip itself.
type Locals = Arc<RwLock<HashMap<tokio::runtime::Id, Option<Arc<Conn>>>>>;

pub struct RedisTier {
    cfg: Redis,
    conn: ArcSwapOption<Conn>,
    locals: Locals,
    up: AtomicBool,
    /// Why Redis was last marked down (for logs and readiness).
    down_reason: Mutex<Option<String>>,
    /// A random id for this process, part of every lease value it takes.
    instance: String,
    pub counters: RedisCounters,
    /// Whether this instance hears other instances' invalidations (set by the keeper).
    pub subscribed: Arc<AtomicBool>,
    /// Entry reads waiting to go to Redis together, per runtime (see `read`).
    reads: Mutex<HashMap<tokio::runtime::Id, Vec<PendingRead>>>,
    /// This tier, for the task that sends a batch of reads.
    me: Weak<RedisTier>,
}

type ReadResult = Result<Option<Vec<u8>>, TierError>;
type PendingRead = (String, oneshot::Sender<ReadResult>);

/// A runtime's queued reads until its sending task takes them. Dropped before that (the task
/// cancelled), it empties the queue, which fails those reads at once and lets the next read
/// start a new batch instead of joining one that no task will send.
struct Unsent<'a> {
    tier: &'a RedisTier,
    runtime: tokio::runtime::Id,
    taken: bool,
}

impl Unsent<'_> {
    fn take(&mut self) -> Vec<PendingRead> {
        self.taken = true;
        self.tier
            .reads
            .lock()
            .remove(&self.runtime)
            .unwrap_or_default()
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if !self.taken {
            // Dropping the senders fails each waiting read ("abandoned").
            drop(self.take());
        }
    }
}

#[derive(Default)]
pub struct RedisCounters {
    pub errors: AtomicU64,
    pub state_changes: AtomicU64,
    pub decode_failures: AtomicU64,
    pub writes: AtomicU64,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl RedisTier {
    pub fn new(cfg: Redis) -> Arc<RedisTier> {
        Arc::new_cyclic(|me| RedisTier {
            reads: Mutex::new(HashMap::new()),
            me: me.clone(),
            cfg,
            conn: ArcSwapOption::empty(),
            locals: Locals::default(),
            up: AtomicBool::new(false),
            down_reason: Mutex::new(Some("not connected yet".into())),
            instance: format!("{:016x}", rand::random::<u64>()),
            counters: RedisCounters::default(),
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn config(&self) -> &Redis {
        &self.cfg
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn down_reason(&self) -> Option<String> {
        self.down_reason.lock().clone()
    }

    /// `{prefix}{<hash>}` and then `suffix`, in one allocation: every Redis hit makes one.
    fn key(&self, hash: &HashBinary, suffix: &str) -> String {
        let mut key = String::with_capacity(self.cfg.prefix.len() + 34 + suffix.len());
        key.push_str(&self.cfg.prefix);
        key.push('{');
        for b in hash {
            for nibble in [b >> 4, b & 15] {
                key.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            }
        }
        key.push('}');
        key.push_str(suffix);
        key
    }

    fn tag(&self, hash: &HashBinary) -> String {
        self.key(hash, "")
    }

    pub fn entry_key(&self, hash: &HashBinary) -> String {
        self.key(hash, ":e")
    }

    fn lease_key(&self, hash: &HashBinary) -> String {
        self.key(hash, ":l")
    }

    /// The pub/sub channel that carries invalidations to every instance.
    pub fn channel(&self) -> String {
        format!("{}invalidate", self.cfg.prefix)
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            // The keeper has just proven its own connection; per-runtime ones may still hold
            // a socket from before the outage, so they are reopened.
            self.locals.write().clear();
            self.counters.state_changes.fetch_add(1, Ordering::Relaxed);
            *self.down_reason.lock() = None;
            info!(
                "redis {} is up: shared tier in use",
                self.cfg.display_nodes()
            );
        }
    }

    pub fn mark_down(&self, reason: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.counters.state_changes.fetch_add(1, Ordering::Relaxed);
            warn!(
                "redis {} is down ({reason}): serving from memory and the origin until it returns",
                self.cfg.display_nodes()
            );
        }
        *self.down_reason.lock() = Some(reason.to_string());
    }

    pub fn set_connection(&self, conn: Conn) {
        self.conn.store(Some(Arc::new(conn)));
        // Reopened after an outage: per-runtime connections are reopened too.
        self.locals.write().clear();
    }

    /// This runtime's own connection; the first call on a runtime starts opening it in the
    /// background and the shared connection serves until it is ready.
    fn local_conn(&self) -> Option<Arc<Conn>> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let id = handle.id();
        if let Some(slot) = self.locals.read().get(&id) {
            return slot.clone();
        }
        {
            let mut locals = self.locals.write();
            if locals.contains_key(&id) {
                return None;
            }
            locals.insert(id, None);
        }
        let locals = self.locals.clone();
        let cfg = self.cfg.clone();
        handle.spawn(async move {
            match connect(&cfg).await {
                Ok(conn) => {
                    locals.write().insert(id, Some(Arc::new(conn)));
                }
                Err(_) => {
                    // Tried again on a later call; the keeper reports the outage.
                    locals.write().remove(&id);
                }
            }
        });
        None
    }

    pub fn has_connection(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Runs `f` on the connection within `op_timeout`, unless Redis is known to be down.
    async fn op<T, F, Fut>(&self, f: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        self.op_of(1, f).await
    }

    /// `op` for `reads` operations sent together (a pipeline): if it fails, each of them
    /// counts as an error, as it would have alone. Operations refused because Redis is
    /// known to be down, or not connected, were never sent and are not counted.
    async fn op_of<T, F, Fut>(&self, reads: u64, f: F) -> Result<T, TierError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(TierError("redis is down".into()));
        }
        let Some(conn) = self.local_conn().or_else(|| self.conn.load_full()) else {
            return Err(TierError("redis is not connected".into()));
        };
        match tokio::time::timeout(self.cfg.op_timeout, f((*conn).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.counters.errors.fetch_add(reads, Ordering::Relaxed);
                // Server-side refusals (wrong type, script errors) do not mean Redis is gone.
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                {
                    self.mark_down(&e.to_string());
                }
                Err(TierError(e.to_string()))
            }
            Err(_) => {
                self.counters.errors.fetch_add(reads, Ordering::Relaxed);
                self.mark_down("operation timed out");
                Err(TierError("redis operation timed out".into()))
            }
        }
    }

    /// Reads the value at `key`. On a single server, reads that come in together go as one
    /// pipeline: one write to Redis and one reply to read for a batch of hits instead of one
    /// each, which on a busy proxy is most of what a Redis hit costs beyond a memory hit. A
    /// batch is every read a runtime asks for before its scheduler's next turn (the sending
    /// task yields once): no timer, so an idle proxy sends a lone read at once. The sending
    /// task is spawned, so a client that goes away cannot strand the reads of others; if the
    /// task itself is dropped (its runtime shutting down), it fails the reads it had.
    async fn read(&self, key: String) -> ReadResult {
        if !self.is_up() {
            return Err(TierError("redis is down".into()));
        }
        let batched = matches!(self.cfg.nodes, RedisNodes::Single(_));
        let (Some(me), Ok(runtime)) = (
            self.me.upgrade().filter(|_| batched),
            tokio::runtime::Handle::try_current(),
        ) else {
            return self
                .op(|mut c| async move { c.query(redis::cmd("GET").arg(&key)).await })
                .await;
        };
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut reads = self.reads.lock();
            let queue = reads.entry(runtime.id()).or_default();
            queue.push((key, tx));
            queue.len() == 1
        };
        if first {
            let id = runtime.id();
            runtime.spawn(async move { me.send_reads(id).await });
        }
        // The batch's own operation is bounded by `op_timeout`; this bounds the wait for it.
        match tokio::time::timeout(self.cfg.op_timeout * 2, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(TierError("redis read abandoned".into())),
            Err(_) => Err(TierError("redis read timed out in its batch".into())),
        }
    }

    async fn send_reads(&self, runtime: tokio::runtime::Id) {
        let mut unsent = Unsent {
            tier: self,
            runtime,
            taken: false,
        };
        tokio::task::yield_now().await;
        let batch = unsent.take();
        if batch.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, _) in &batch {
            pipe.cmd("GET").arg(key);
        }
        let values: Result<Vec<Option<Vec<u8>>>, TierError> = self
            .op_of(
                batch.len() as u64,
                |mut c| async move { c.pipe(&pipe).await },
            )
            .await;
        match values {
            Ok(values) if values.len() == batch.len() => {
                for ((_, tx), value) in batch.into_iter().zip(values) {
                    let _ = tx.send(Ok(value));
                }
            }
            Ok(values) => {
                let e = format!("{} replies to {} reads", values.len(), batch.len());
                self.counters
                    .errors
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (_, tx) in batch {
                    let _ = tx.send(Err(TierError(e.clone())));
                }
            }
            Err(e) => {
                for (_, tx) in batch {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    /// A liveness probe that ignores the up/down state (used by the keeper).
    pub async fn ping(&self) -> Result<(), String> {
        let Some(conn) = self.conn.load_full() else {
            return Err("not connected".into());
        };
        let mut c = (*conn).clone();
        match tokio::time::timeout(self.cfg.op_timeout, c.query::<String>(&redis::cmd("PING")))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Tells every instance to drop `hash` from its memory tier.
    pub async fn publish_invalidation(&self, hash: &HashBinary) -> Result<(), TierError> {
        let channel = self.channel();
        let msg = hex::encode(hash);
        self.op(|mut c| async move {
            c.query::<i64>(redis::cmd("PUBLISH").arg(&channel).arg(&msg))
                .await
        })
        .await
        .map(|_| ())
    }

    /// Tries to become the one instance fetching `key` from the origin. Taking the lease
    /// also reads the times of what Redis holds for the key, in the same round trip: a fill
    /// that finished just before this one started may have stored a newer copy already.
    pub async fn try_lease(&self, key: &str, hash: &HashBinary) -> Lease {
        // Taken, held or failed in one step: KEYS lease and entry share a cluster slot.
        static TAKE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
                 return {1, redis.call('getrange', KEYS[2], 0, ARGV[3])} end \
                 return {0, redis.call('get', KEYS[1]) or ''}",
            )
        });
        let lease_key = self.lease_key(hash);
        let entry_key = self.entry_key(hash);
        let now = epoch_ms(SystemTime::now());
        let value = format!("{}:{}:{now}", self.instance, rand::random::<u32>());
        let ttl = self.cfg.lease.as_millis() as u64;
        let last = codec::times_prefix_len(key.len()).saturating_sub(1);
        let v = value.clone();
        let got = self
            .op(|mut c| async move {
                let mut inv = TAKE.key(&lease_key);
                inv.key(&entry_key).arg(&v).arg(ttl).arg(last);
                match &mut c {
                    Conn::Single(m) => inv.invoke_async::<(i64, Vec<u8>)>(m).await,
                    Conn::Cluster(m) => inv.invoke_async::<(i64, Vec<u8>)>(m).await,
                }
            })
            .await;
        match got {
            Ok((1, prefix)) => Lease::Acquired {
                value,
                stored: codec::peek_times(&prefix, key),
            },
            Ok((_, holder)) => match lease_state(
                (!holder.is_empty()).then(|| String::from_utf8_lossy(&holder).into_owned()),
            ) {
                LeaseState::Held(since) => Lease::HeldSince(since),
                LeaseState::Failed(f) => Lease::Failed(f),
                // Released between the two steps of another caller: try again.
                LeaseState::Free => Lease::HeldSince(0),
            },
            Err(_) => Lease::Unavailable,
        }
    }

    /// What the lease key of `hash` says now (`None`: Redis could not say).
    pub async fn lease_state(&self, hash: &HashBinary) -> Option<LeaseState> {
        let key = self.lease_key(hash);
        self.op(|mut c| async move { c.query::<Option<String>>(redis::cmd("GET").arg(&key)).await })
            .await
            .ok()
            .map(lease_state)
    }

    /// Turns our lease into the record of a failed fill for `keep` (only if the lease is
    /// still ours): other instances share the failure instead of asking the upstream again.
    pub async fn fail_lease(
        &self,
        hash: &HashBinary,
        value: &str,
        failed: &FailedFill,
        keep: Duration,
    ) {
        static FAIL: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('get', KEYS[1]) == ARGV[1] then \
                 return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) else return 0 end",
            )
        });
        let ms = keep.as_millis().min(u64::MAX as u128) as u64;
        if ms == 0 {
            return self.release_lease(hash, value).await;
        }
        let key = self.lease_key(hash);
        let record = format!(
            "{FAILED}{}:{}",
            failed.code,
            failed
                .retry_after_ms
                .map(|ms| ms.to_string())
                .unwrap_or_default()
        );
        let value = value.to_string();
        let _ = self
            .op(|mut c| async move {
                let mut inv = FAIL.key(&key);
                inv.arg(&value).arg(&record).arg(ms);
                match &mut c {
                    Conn::Single(m) => inv.invoke_async::<redis::Value>(m).await,
                    Conn::Cluster(m) => inv.invoke_async::<redis::Value>(m).await,
                }
            })
            .await;
    }

    /// Keeps a lease alive while its holder's upstream call runs.
    pub async fn renew_lease(&self, hash: &HashBinary, value: &str) {
        static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('get', KEYS[1]) == ARGV[1] then \
                 return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
            )
        });
        let key = self.lease_key(hash);
        let ttl = self.cfg.lease.as_millis().to_string();
        let value = value.to_string();
        let _ = self
            .op(|mut c| async move {
                let mut inv = RENEW.key(&key);
                inv.arg(&value).arg(&ttl);
                match &mut c {
                    Conn::Single(m) => inv.invoke_async::<i64>(m).await,
                    Conn::Cluster(m) => inv.invoke_async::<i64>(m).await,
                }
            })
            .await;
    }

    /// Gives a lease up (only if it is still ours), e.g. when the fetch failed.
    pub async fn release_lease(&self, hash: &HashBinary, value: &str) {
        static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                "if redis.call('get', KEYS[1]) == ARGV[1] then \
                 return redis.call('del', KEYS[1]) else return 0 end",
            )
        });
        let key = self.lease_key(hash);
        let value = value.to_string();
        let _ = self
            .op(|mut c| async move { c.script::<i64>(&RELEASE, &key, &value).await })
            .await;
    }

    /// Writes an entry piece by piece: the head, then the body in batches appended to a
    /// temporary key renamed into place at the end, so a large body is never copied into
    /// one buffer and readers never see half a value. The fill lease is released with it.
    async fn write(&self, entry: &Entry, ttl_ms: u64) -> Result<(), TierError> {
        let head = codec::encode_head(entry);
        let key = self.entry_key(&entry.hash);
        let lease = self.lease_key(&entry.hash);
        if entry.body_len <= WRITE_BATCH {
            let mut value = head;
            for c in &entry.body {
                value.extend_from_slice(c);
            }
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            p.cmd("DEL").arg(&lease).ignore();
            return self.op(|mut c| async move { c.pipe::<()>(&p).await }).await;
        }
        let tmp = format!("{}:w{:08x}", self.tag(&entry.hash), rand::random::<u32>());
        let first = {
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(&tmp)
                .arg(head)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            p
        };
        self.op(|mut c| async move { c.pipe::<()>(&first).await })
            .await?;
        let mut batch = redis::pipe();
        let mut batch_bytes = 0;
        for chunk in &entry.body {
            batch.cmd("APPEND").arg(&tmp).arg(chunk.as_ref()).ignore();
            batch_bytes += chunk.len();
            if batch_bytes >= WRITE_BATCH {
                let p = std::mem::replace(&mut batch, redis::pipe());
                batch_bytes = 0;
                if let Err(e) = self.op(|mut c| async move { c.pipe::<()>(&p).await }).await {
                    self.discard(&tmp).await;
                    return Err(e);
                }
            }
        }
        batch.cmd("RENAME").arg(&tmp).arg(&key).ignore();
        batch.cmd("DEL").arg(&lease).ignore();
        let result = self
            .op(|mut c| async move { c.pipe::<()>(&batch).await })
            .await;
        if result.is_err() {
            self.discard(&tmp).await;
        }
        result
    }

    fn tag_set(&self, tag: &str) -> String {
        format!("{}t:{tag}", self.cfg.prefix)
    }

    fn tags_key(&self, hash: &HashBinary) -> String {
        format!("{}:t", self.tag(hash))
    }

    /// Adds `key` to each tag's sorted set (scored by expiry) and records the key's tags next
    /// to its entry. Each set is trimmed of dead members and made to expire with its last one.
    pub async fn index_add(&self, key: &str, tags: &[String], until_ms: u64) {
        let now = epoch_ms(SystemTime::now());
        let ttl = until_ms.saturating_sub(now) + super::index::TAG_SET_SLACK.as_millis() as u64;
        let hash = pingora::cache::key::hash_key(key);
        let mut jobs = Vec::with_capacity(tags.len() + 1);
        for t in tags {
            // One key per pipeline: every command of it lands on the same cluster slot.
            let set = self.tag_set(t);
            let mut p = redis::pipe();
            p.cmd("ZADD").arg(&set).arg(until_ms).arg(key).ignore();
            p.cmd("ZREMRANGEBYSCORE")
                .arg(&set)
                .arg("-inf")
                .arg(now)
                .ignore();
            p.cmd("PEXPIRE").arg(&set).arg(ttl).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(&set).arg(ttl).arg("GT").ignore();
            jobs.push(p);
        }
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.tags_key(&hash))
            .arg(tags.join("\n"))
            .arg("PX")
            .arg(ttl)
            .ignore();
        jobs.push(p);
        let runs = jobs
            .into_iter()
            .map(|p| self.op(|mut c| async move { c.pipe::<()>(&p).await }));
        for r in futures::future::join_all(runs).await {
            if let Err(e) = r {
                log::debug!("tag index write failed: {e}");
            }
        }
    }

    /// Keys carrying `tag` that are still alive at `now_ms`.
    pub async fn index_keys(&self, tag: &str, now_ms: u64) -> Vec<String> {
        let set = self.tag_set(tag);
        self.op(|mut c| async move {
            c.query::<Vec<String>>(
                redis::cmd("ZRANGE")
                    .arg(&set)
                    .arg(now_ms)
                    .arg("+inf")
                    .arg("BYSCORE"),
            )
            .await
        })
        .await
        .unwrap_or_default()
    }

    pub async fn index_tags(&self, hash: &HashBinary) -> Vec<String> {
        let key = self.tags_key(hash);
        let v: Option<String> = self
            .op(|mut c| async move { c.query(redis::cmd("GET").arg(&key)).await })
            .await
            .ok()
            .flatten();
        v.map(|s| s.split('\n').map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Publishes an invalidation message (a key hash in hex, `t:<tag>`, `g:<glob>` or `*`).
    pub async fn publish(&self, message: &str) -> Result<(), TierError> {
        let channel = self.channel();
        let msg = message.to_string();
        self.op(|mut c| async move {
            c.query::<i64>(redis::cmd("PUBLISH").arg(&channel).arg(&msg))
                .await
        })
        .await
        .map(|_| ())
    }

    async fn discard(&self, tmp: &str) {
        let tmp = tmp.to_string();
        let _ = self
            .op(|mut c| async move { c.query::<i64>(redis::cmd("DEL").arg(&tmp)).await })
            .await;
    }
}

#[async_trait]
impl Tier for RedisTier {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, hash: &HashBinary) -> Result<Option<Arc<Entry>>, TierError> {
        let Some(raw) = self.read(self.entry_key(hash)).await? else {
            return Ok(None);
        };
        match codec::decode(Bytes::from(raw), *hash) {
            Ok(entry) => Ok(Some(Arc::new(entry))),
            Err(e) => {
                self.counters
                    .decode_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    "ignoring unreadable redis value {}: {e}",
                    self.entry_key(hash)
                );
                Ok(None)
            }
        }
    }

    async fn put(&self, entry: Arc<Entry>) -> Result<Admission, TierError> {
        if entry.size() as u64 > self.cfg.max_object_bytes {
            return Ok(Admission::TooLarge);
        }
        let ttl = entry
            .usable_until()
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        self.write(&entry, ttl.as_millis() as u64).await?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(Admission::Stored)
    }

    async fn remove(&self, hash: &HashBinary) -> Result<bool, TierError> {
        let key = self.entry_key(hash);
        let n: i64 = self
            .op(|mut c| async move { c.query(redis::cmd("DEL").arg(&key)).await })
            .await?;
        Ok(n > 0)
    }

    fn stats(&self) -> TierStats {
        TierStats {
            entries: 0,
            copies: 0,
            bytes: 0,
            max_bytes: self.cfg.max_object_bytes,
        }
    }
}

/// Opens a connection to `cfg`'s server or cluster.
pub async fn connect(cfg: &Redis) -> RedisResult<Conn> {
    match &cfg.nodes {
        RedisNodes::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                .set_response_timeout(Some(cfg.op_timeout))
                .set_number_of_retries(1);
            let m = tokio::time::timeout(
                cfg.connect_timeout,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
            Ok(Conn::Single(m))
        }
        RedisNodes::Cluster(urls) => {
            let client = redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.op_timeout)
                .retries(1)
                .build()?;
            let c = tokio::time::timeout(cfg.connect_timeout * 2, client.get_async_connection())
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"))
                })??;
            Ok(Conn::Cluster(c))
        }
    }
}

/// The node to subscribe on: any one node carries every published message, cluster-wide.
pub fn pubsub_urls(cfg: &Redis) -> Vec<String> {
    match &cfg.nodes {
        RedisNodes::Single(u) => vec![u.clone()],
        RedisNodes::Cluster(us) => us.clone(),
    }
}

/// Purge acknowledgements (see `acks.rs`): a marker published after a purge's invalidations,
/// and a set per marker of the instances that applied everything before it.
impl RedisTier {
    fn ack_key(&self, id: &str) -> String {
        format!("{}ack:{id}", self.cfg.prefix)
    }

    /// Publishes `message` on the invalidation channel; returns how many subscriptions
    /// received it (on a cluster: those on the node that took the PUBLISH).
    pub async fn publish_counted(&self, message: &str) -> Result<u64, TierError> {
        let channel = self.channel();
        let msg = message.to_string();
        let n: i64 = self
            .op(|mut c| async move { c.query(redis::cmd("PUBLISH").arg(&channel).arg(&msg)).await })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records that this instance has applied every invalidation published before the marker
    /// `id`. The set outlives any wait for it, then expires.
    pub async fn acknowledge(&self, id: &str) -> Result<(), TierError> {
        let key = self.ack_key(id);
        let mut p = redis::pipe();
        p.cmd("SADD").arg(&key).arg(&self.instance).ignore();
        p.cmd("PEXPIRE").arg(&key).arg(10_000).ignore();
        self.op(|mut c| async move { c.pipe::<()>(&p).await }).await
    }

    /// How many instances have acknowledged the marker `id`.
    pub async fn acknowledgements(&self, id: &str) -> Result<u64, TierError> {
        let key = self.ack_key(id);
        self.op(|mut c| async move { c.query(redis::cmd("SCARD").arg(&key)).await })
            .await
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn lease_values_read_back() {
        assert_eq!(lease_state(None), LeaseState::Free);
        assert_eq!(
            lease_state(Some("ab12:77:1700000000000".into())),
            LeaseState::Held(1_700_000_000_000)
        );
        assert_eq!(lease_state(Some("junk".into())), LeaseState::Held(0));
        assert_eq!(
            lease_state(Some("fail:status-503:".into())),
            LeaseState::Failed(FailedFill {
                code: "status-503".into(),
                retry_after_ms: None
            })
        );
        assert_eq!(
            lease_state(Some("fail:rate-limited:7000".into())),
            LeaseState::Failed(FailedFill {
                code: "rate-limited".into(),
                retry_after_ms: Some(7000)
            })
        );
    }
}
