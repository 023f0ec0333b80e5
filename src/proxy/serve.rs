//! What a cached GET or HEAD gets, whatever the upstream does: the decision between a hit,
//! a stale copy while a refresh runs, and the key's fill, and the answer each makes.

use std::sync::Arc;
use std::time::SystemTime;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::answer::{self, Answer, Found};
use super::ctx::{Ctx, Lookup, Served};
use super::fill;
use super::fill::{FillOutcome, Filled, How, Refresh, Refreshing, Want};
use super::RentCache;
use crate::config::Mode;
use crate::policy::outer::CacheStatus;
use crate::policy::{key, vary};
use crate::storage::Entry;
use crate::upstream::{Failure, FetchError};

/// The status the upstream answered with, when it answered (for `Cache-Status`).
fn upstream_status(f: &Failure) -> Option<u16> {
    match f {
        Failure::Status(s) => Some(*s),
        Failure::RateLimited { .. } => Some(429),
        _ => None,
    }
}

impl RentCache {
    /// Answers a GET or HEAD on a cached route.
    pub(super) async fn serve_cached(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let answer = match self.find_fresh(req, ctx).await {
            Some(found) => answer::compose(req, ctx, found, SystemTime::now()),
            None => self.answer_unfresh(req, ctx).await,
        };
        self.record(session.req_header(), ctx);
        self.write_answer(session, ctx, answer).await
    }

    /// The key's copy if it is fresh, in the form this client takes it (`ctx.served` says
    /// HIT); a key hot enough gets a refresh in the background first. Otherwise `None`, and
    /// `ctx.lookup` holds what the lookup found for the rest of the request.
    pub(super) async fn find_fresh(&self, req: &RequestHeader, ctx: &mut Ctx) -> Option<Found> {
        if matches!(ctx.lookup, Lookup::NotYet) {
            let c = ctx.canonical.clone()?;
            ctx.lookup = self.look_up(&c).await;
        }
        // The URL's answers vary on request headers: its key holds the index of its
        // variants, and this request's is looked up in turn.
        if let Lookup::Found(index, _) = &ctx.lookup {
            if let (Some(v), Some(c)) = (index.vary.clone(), ctx.canonical.clone()) {
                let variant = Arc::new(vary::variant(&c, &v.names, &req.headers));
                ctx.lookup = self.look_up(&variant).await;
                ctx.canonical = Some(variant);
            }
        }
        let c = ctx.canonical.clone()?;
        let Lookup::Found(entry, tier) = &ctx.lookup else {
            return None;
        };
        // After the read: an entry that expired while Redis answered is not fresh.
        let now = SystemTime::now();
        if !entry.times.is_fresh(now) {
            return None;
        }
        let (entry, tier) = (entry.clone(), *tier);
        let route = ctx.route()?;
        let due = self.hot.hit(
            &c.hash,
            &c.key,
            entry.times.updated,
            entry.times.fresh_until,
            route.ttl,
            &ctx.config.refresh_ahead,
            !route.stale_while_revalidate.is_zero(),
            now,
        );
        if due
            && self
                .fills
                .upstream()
                .throttle
                .spare(&ctx.config.upstream.budget)
        {
            let want = self.want(req, ctx, c, Some(entry.clone()));
            // Visitors keep getting the fresh copy while it is refreshed.
            let _ = self.fills.refresh(want, Refresh::RefreshAhead);
        }
        let mut served = Served::new(CacheStatus::Hit);
        served.tier = Some(tier);
        ctx.served = Some(served);
        Some(self.shape(req, ctx, entry, true).await)
    }

    /// The variant this request selects, when `outcome` is another variant of its URL.
    fn other_variant(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        outcome: &FillOutcome,
    ) -> Option<Arc<key::Canonical>> {
        let (names, filled) = outcome.as_ref().ok()?.variant.as_ref()?;
        let url = fill::url_of(ctx.canonical.as_ref()?);
        let own = vary::variant(&url, names, &req.headers);
        (own.key != *filled).then(|| Arc::new(own))
    }

    /// What a lookup of `c` finds.
    async fn look_up(&self, c: &key::Canonical) -> Lookup {
        match self
            .storage
            .find_usable(&c.hash, Some(&c.key), SystemTime::now())
            .await
        {
            Some((entry, tier)) => Lookup::Found(entry, tier),
            None => Lookup::Nothing,
        }
    }

    /// A fill of `canonical` for this request.
    fn want(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        canonical: Arc<key::Canonical>,
        stale: Option<Arc<Entry>>,
    ) -> Want {
        let forward = ctx
            .route()
            .map(|r| crate::upstream::forwarded(&ctx.config, r, req))
            .unwrap_or_default();
        Want {
            canonical,
            config: ctx.config.clone(),
            stale,
            forward,
        }
    }

    /// The answer for a key with no fresh copy.
    async fn answer_unfresh(&self, req: &RequestHeader, ctx: &mut Ctx) -> Answer {
        let found = match &ctx.lookup {
            Lookup::Found(entry, tier) => Some((entry.clone(), *tier)),
            _ => None,
        };
        if let Some((entry, tier)) = &found {
            let swr = entry.times.swr_sec;
            if swr > 0 && entry.times.within(swr, SystemTime::now()) {
                return self
                    .answer_revalidating(req, ctx, entry.clone(), tier)
                    .await;
            }
        }
        let Some(canonical) = ctx.canonical.clone() else {
            let e = Arc::new(Failure::Other("unrouted".into()).into());
            return self.answer_failed(req, ctx, None, &e).await;
        };
        let want = self.want(req, ctx, canonical, found.as_ref().map(|(e, _)| e.clone()));
        let waited = std::time::Instant::now();
        let (mut outcome, mut joined) = self.fills.fill(want).await;
        // The fill it joined brought an answer that varies, and another variant than this
        // request selects: its own variant is filled (joining others that select it).
        if let Some(own) = joined
            .then(|| self.other_variant(req, ctx, &outcome))
            .flatten()
        {
            ctx.canonical = Some(own.clone());
            (outcome, joined) = self.fills.fill(self.want(req, ctx, own, None)).await;
        }
        ctx.coalesced = joined;
        ctx.upstream_time = Some(waited.elapsed());
        let found = match (&outcome, found) {
            // No copy was found, and now there is no answer either: look once more (a tier
            // may have failed to answer the first time, another instance may have stored one).
            (Err(_), None) => self.usable_copy(ctx).await,
            (_, found) => found,
        };
        self.answer_fill(req, ctx, found, outcome, joined).await
    }

    /// A usable copy of the request's key, looked up in every tier now.
    async fn usable_copy(&self, ctx: &Ctx) -> Option<(Arc<Entry>, &'static str)> {
        let c = ctx.canonical.as_ref()?;
        self.storage
            .find_usable(&c.hash, Some(&c.key), SystemTime::now())
            .await
    }

    /// An expired copy within its stale-while-revalidate window: served at once while a
    /// refresh runs (`UPDATING`), or, when the key's last fetch failed, as what it is:
    /// `STALE`, with the reason.
    async fn answer_revalidating(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
        entry: Arc<Entry>,
        tier: &'static str,
    ) -> Answer {
        let mut served = Served::new(CacheStatus::Updating);
        served.tier = Some(tier);
        if let Some(canonical) = ctx.canonical.clone() {
            let want = self.want(req, ctx, canonical, Some(entry.clone()));
            if let Refreshing::Failed(f) = self.fills.refresh(want, Refresh::StaleWhileRevalidate) {
                served.status = CacheStatus::Stale;
                served.upstream_status = upstream_status(&f);
                served.reason = Some(f.code());
            }
        }
        ctx.served = Some(served);
        let found = self.shape(req, ctx, entry, true).await;
        answer::compose(req, ctx, found, SystemTime::now())
    }

    /// The answer once the key's fill is over.
    async fn answer_fill(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
        stale: Option<(Arc<Entry>, &'static str)>,
        outcome: FillOutcome,
        joined: bool,
    ) -> Answer {
        let filled = match outcome {
            Ok(filled) if filled.shared || !joined => filled,
            // Another request's answer that only it may have: this one asks for itself.
            Ok(_) => return self.answer_alone(req, ctx, stale).await,
            Err(e) => return self.answer_failed(req, ctx, stale, &e).await,
        };
        let Filled {
            entry,
            how,
            kept,
            upstream_status,
            ..
        } = &*filled;
        // Requests that waited for another's fill got a stored entry: a hit, as in nginx
        // and Varnish, from the tier that kept it.
        let waited_for_stored = joined && kept.any();
        let mut served = Served::new(match how {
            _ if waited_for_stored => CacheStatus::Hit,
            How::Fetched if stale.is_some() => CacheStatus::Expired,
            How::Fetched => CacheStatus::Miss,
            How::Revalidated => CacheStatus::Revalidated,
            How::Relayed | How::Found => CacheStatus::Hit,
        });
        served.stored = kept.any() && *how == How::Fetched && !joined;
        served.upstream_status = (!joined).then_some(*upstream_status).flatten();
        served.tier = match how {
            How::Relayed => Some("redis"),
            _ if served.status.from_cache() => kept.first(),
            _ => None,
        };
        ctx.served = Some(served);
        let found = self.shape(req, ctx, entry.clone(), kept.memory).await;
        answer::compose(req, ctx, found, SystemTime::now())
    }

    /// A request whose key's fill brought an answer only the fill's own request may have
    /// (`private`, `no-store` from an `honor_origin` upstream) asks the upstream itself.
    async fn answer_alone(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
        stale: Option<(Arc<Entry>, &'static str)>,
    ) -> Answer {
        let Some(canonical) = ctx.canonical.clone() else {
            let e = Arc::new(Failure::Other("unrouted".into()).into());
            return self.answer_failed(req, ctx, stale, &e).await;
        };
        let want = self.want(req, ctx, canonical, None);
        let waited = std::time::Instant::now();
        let fetched = self.fills.fetch_alone(&want).await;
        ctx.upstream_time = Some(ctx.upstream_time.unwrap_or_default() + waited.elapsed());
        match fetched {
            Ok(f) => {
                let status = f.header.status.as_u16();
                let entry = Arc::new(fill::unstored(&want.canonical, f, SystemTime::now(), true));
                let mut served = Served::new(CacheStatus::Miss);
                served.upstream_status = Some(status);
                ctx.served = Some(served);
                let found = self.shape(req, ctx, entry, false).await;
                answer::compose(req, ctx, found, SystemTime::now())
            }
            Err(e) => self.answer_failed(req, ctx, stale, &Arc::new(e)).await,
        }
    }

    /// The answer when the upstream gave nothing usable: the stale copy while its
    /// stale-if-error window lasts; else the origin's own answer on `honor_origin` routes,
    /// or rentcache's JSON error.
    async fn answer_failed(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
        stale: Option<(Arc<Entry>, &'static str)>,
        e: &Arc<FetchError>,
    ) -> Answer {
        let failure = &e.failure;
        let now = SystemTime::now();
        let had_copy = stale.is_some();
        if let Some((entry, tier)) = stale.filter(|(s, _)| s.times.within(s.times.sie_sec, now)) {
            let mut served = Served::new(CacheStatus::Stale);
            served.tier = Some(tier);
            served.reason = Some(failure.code());
            served.upstream_status = upstream_status(failure);
            ctx.served = Some(served);
            let found = self.shape(req, ctx, entry, true).await;
            return answer::compose(req, ctx, found, now);
        }
        let mut served = Served::new(if had_copy {
            CacheStatus::Expired
        } else {
            CacheStatus::Miss
        });
        served.reason = Some(failure.code());
        served.upstream_status = upstream_status(failure);
        ctx.served = Some(served);
        let honor_origin = ctx.route().is_some_and(|r| r.mode == Mode::HonorOrigin);
        if let (true, Some(origin)) = (honor_origin, &e.origin) {
            let mut header = crate::policy::validators::without_case(&origin.header);
            for name in ["transfer-encoding", "connection", "keep-alive"] {
                header.remove_header(name);
            }
            let _ = header.insert_header(http::header::CONTENT_LENGTH, origin.len());
            return answer::plain(req, ctx, header, bytes::Bytes::from(origin.body.concat()));
        }
        let (header, body) = failure.response();
        answer::plain(req, ctx, header, body)
    }
}
