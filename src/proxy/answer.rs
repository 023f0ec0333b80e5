//! Answers made from entries, whatever the cache did: the headers each gets (cache status,
//! `Age`, outer-tier directives, CORS, `Vary`), conditional `304`s and byte ranges, and how
//! they are written.

use std::time::SystemTime;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora::proxy::{range_header_filter, RangeType, Session};
use pingora::Result;

use super::ctx::Ctx;
use super::{direct, gzip, outcome, RentCache};
use crate::policy::encoding;
use crate::storage::Entry;
use std::sync::Arc;

/// A complete answer, ready to write.
pub(crate) struct Answer {
    pub header: ResponseHeader,
    /// Empty for an answer without a body (HEAD, 304, 416).
    pub body: Vec<Bytes>,
    /// Only pingora's writer can encode it the way this client asks.
    pub may_compress: bool,
}

/// An entry in the form this client takes it.
pub(crate) struct Found {
    pub entry: Arc<Entry>,
    /// A coding may apply to it (its answers vary on `Accept-Encoding`).
    pub encodable: bool,
    /// Only pingora's writer can encode it the way this client asks.
    pub may_compress: bool,
}

/// Whether a request asks for part of the body (answered in identity coding).
fn ranged(req: &RequestHeader) -> bool {
    req.method == http::Method::GET && req.headers.contains_key(http::header::RANGE)
}

impl RentCache {
    /// `entry` in the form this client takes it: a gzip copy kept in memory (`stored`
    /// entries only), encoded by pingora's writer on the way out, or as it is.
    pub(super) async fn shape(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        entry: Arc<Entry>,
        stored: bool,
    ) -> Found {
        let accept = req.headers.get(http::header::ACCEPT_ENCODING);
        let encodable = self.compression_level > 0
            && ctx.route().is_none_or(|r| r.compress)
            && encoding::compressible(&entry.header, entry.body_len);
        let identity = ranged(req) || accept.is_none_or(|v| v == "identity");
        // Copies are made whole and kept in memory: an entry too large for memory (kept in
        // Redis only) is encoded chunk by chunk on its way out instead, as below.
        let takes_gzip = encodable
            && stored
            && !identity
            && encoding::accepts_gzip(accept)
            && self.storage.memory().admits(entry.size());
        // Pingora's compression module encodes on the way through its writer: answers it
        // may encode for this client (a coding other than gzip) must go that way.
        let may_compress = encodable && !takes_gzip && !identity;
        let entry = if takes_gzip {
            gzip::copy_of(self.storage.memory(), &entry, self.compression_level.min(9)).await
        } else {
            entry
        };
        Found {
            entry,
            encodable,
            may_compress,
        }
    }

    /// Writes an answer (already counted): one `writev` on plain HTTP/1, else pingora's
    /// writer (with its compression module where the answer allows it).
    pub(super) async fn write_answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        a: Answer,
    ) -> Result<bool> {
        ctx.sent_status = Some(a.header.status.as_u16());
        if !a.may_compress {
            match direct::send(session, &a.header, &a.body).await {
                direct::Sent::Whole => {
                    ctx.direct_body_bytes = a.body.iter().map(|b| b.len() as u64).sum();
                    return Ok(true);
                }
                direct::Sent::Broken => {
                    ctx.client_gone = true;
                    return Ok(true);
                }
                direct::Sent::NotTried => {}
            }
            // Encoded (or left identity) here on purpose: the module must not add a coding.
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(0);
            }
        }
        let Answer { header, body, .. } = a;
        session
            .write_response_header(Box::new(header), body.is_empty())
            .await?;
        let last = body.len().saturating_sub(1);
        for (i, chunk) in body.into_iter().enumerate() {
            session.write_response_body(Some(chunk), i == last).await?;
        }
        Ok(true)
    }
}

/// The answer for `found`, with what `ctx.served` says the cache did, as of `now`.
pub(crate) fn compose(req: &RequestHeader, ctx: &Ctx, found: Found, now: SystemTime) -> Answer {
    let Found {
        entry,
        encodable,
        may_compress,
    } = found;
    let mut header = entry.header.clone();
    if encodable {
        encoding::vary_on_accept_encoding(&mut header);
    }
    let stored = ctx
        .served
        .as_ref()
        .is_some_and(|s| s.stored || s.status.from_cache());
    let clock = stored.then(|| outcome::EntryClock {
        fresh_until: entry.times.fresh_until,
        age: entry.age(now),
    });
    if let Some(c) = &clock {
        let _ = header.insert_header(http::header::AGE, c.age.as_secs());
    }
    outcome::decorate_with(&mut header, req, ctx, clock, &entry.tags, now);
    let not_modified = not_modified_filter(req, &header);
    if not_modified {
        to_304(&mut header);
    }
    let range = if not_modified || may_compress {
        RangeType::None
    } else {
        range_header_filter(req, &mut header, Some(2))
    };
    let header_only = not_modified || req.method == http::Method::HEAD;
    let body = match range {
        _ if header_only => Vec::new(),
        RangeType::Single(r) => slice(&entry.body, r),
        RangeType::Invalid => Vec::new(),
        RangeType::None | RangeType::Multi(_) => entry.body.clone(),
    };
    Answer {
        header,
        body,
        may_compress,
    }
}

/// An answer rentcache writes itself (a JSON error, an origin's error page passed on).
pub(crate) fn plain(req: &RequestHeader, ctx: &Ctx, header: ResponseHeader, body: Bytes) -> Answer {
    let mut header = header;
    outcome::decorate_with(&mut header, req, ctx, None, &[], SystemTime::now());
    let head = req.method == http::Method::HEAD;
    Answer {
        header,
        body: if head || body.is_empty() {
            Vec::new()
        } else {
            vec![body]
        },
        may_compress: false,
    }
}

/// The bytes `range` of a body stored in chunks.
fn slice(body: &[Bytes], range: std::ops::Range<usize>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    for chunk in body {
        let (start, end) = (offset, offset + chunk.len());
        offset = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let from = range.start.saturating_sub(start);
        let to = (range.end - start).min(chunk.len());
        out.push(chunk.slice(from..to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_across_chunks() {
        let body = vec![
            Bytes::from_static(b"0123"),
            Bytes::from_static(b"4567"),
            Bytes::from_static(b"89"),
        ];
        let join = |v: Vec<Bytes>| v.concat();
        assert_eq!(join(slice(&body, 0..10)), b"0123456789");
        assert_eq!(join(slice(&body, 2..6)), b"2345");
        assert_eq!(join(slice(&body, 4..8)), b"4567");
        assert_eq!(join(slice(&body, 9..10)), b"9");
        assert!(slice(&body, 10..10).is_empty());
    }
}
