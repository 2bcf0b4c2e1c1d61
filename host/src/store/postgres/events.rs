//! Events in PostgreSQL: the listing query, the row format, and the
//! insert path of a group commit (de-duplication, workspaces, suppressions,
//! single-use tokens, outbox rows).

use std::collections::HashMap;

use postgres::Row;

use super::sql::Tx;
use super::{Args, decode_cursor, outbox, queue};
use crate::event::{
    BounceClass, DeliveryEvent, EVENT_SCHEMA_VERSION, EventKind, NormalizedEvent, PluginStamp,
};
use crate::store::{
    Applied, EventQuery, NewEvent, Order, ReplayToken, SoftBouncePolicy, StoreError,
    SuppressionReason, address_key, format_ms,
};

/// Expired tokens deleted per request that records one (as in SQLite).
const PRUNE_PER_WRITE: i64 = 64;

/// The SQL of an event listing, its arguments and the page size.
pub(super) fn event_listing(q: &EventQuery) -> Result<(String, Args, usize), StoreError> {
    let by_workspace = q.workspace.is_some() && q.recipient.is_none();
    let (from, seq) = if by_workspace {
        ("event_workspaces w JOIN events e ON e.seq = w.seq", "w.seq")
    } else {
        ("events e", "e.seq")
    };
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM {from} WHERE true");
    let mut args = Args::default();
    if let Some(c) = &q.connection {
        sql.push_str(&format!(" AND e.connection = {}", args.push(c.clone())));
    }
    if let Some(w) = &q.workspace {
        let p = args.push(w.clone());
        if by_workspace {
            sql.push_str(&format!(" AND w.workspace = {p}"));
        } else {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM event_workspaces x WHERE x.workspace = {p} AND x.seq = e.seq)"
            ));
        }
    }
    if let Some(k) = q.kind {
        sql.push_str(&format!(
            " AND e.kind = {}",
            args.push(k.as_str().to_owned())
        ));
    }
    if let Some(r) = &q.recipient {
        sql.push_str(&format!(
            " AND e.recipient_key = {}",
            args.push(address_key(r))
        ));
    }
    if let Some(t) = q.since {
        sql.push_str(&format!(" AND e.occurred_at >= {}", args.push(t)));
    }
    if let Some(t) = q.until {
        sql.push_str(&format!(" AND e.occurred_at < {}", args.push(t)));
    }
    if let Some(a) = &q.after {
        // The newest event at or before that id, so an id that is not
        // stored still positions the tail.
        let p = args.push(a.clone());
        sql.push_str(&format!(
            " AND {seq} > coalesce((SELECT seq FROM events WHERE id <= {p} ORDER BY id DESC LIMIT 1), 0)"
        ));
    }
    if let Some(c) = &q.cursor {
        let (order, at) = decode_cursor(c)?;
        let at: i64 = at.parse().map_err(|_| StoreError::BadCursor)?;
        if order != q.order {
            return Err(StoreError::BadCursor);
        }
        let op = if order == Order::Asc { ">" } else { "<" };
        sql.push_str(&format!(" AND {seq} {op} {}", args.push(at)));
    }
    let limit = q.limit.clamp(1, 1000);
    let dir = match q.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    sql.push_str(&format!(" ORDER BY {seq} {dir} LIMIT {}", limit + 1));
    Ok((sql, args, limit))
}

/// The columns [`row_event`] reads (plus `seq`, for cursors).
pub(super) const EVENT_COLUMNS: &str = "e.id, e.connection, e.workspaces, e.received_at, e.kind, e.bounce_class, \
     e.recipient, e.occurred_at, e.provider, e.provider_event_id, e.provider_message_id, \
     e.message_id, e.smtp_status, e.enhanced_status, e.diagnostic, e.plugin_id, \
     e.plugin_version, e.plugin_sha256, e.seq";

/// One event row as the API shows it.
pub(super) fn row_event(r: &Row) -> Result<DeliveryEvent, StoreError> {
    let workspaces: String = r.try_get(2)?;
    let kind: String = r.try_get(4)?;
    let bounce: Option<String> = r.try_get(5)?;
    let bad = |what: &str| StoreError::Backend(format!("stored {what} is invalid"));
    Ok(DeliveryEvent {
        schema_version: EVENT_SCHEMA_VERSION,
        id: r.try_get(0)?,
        connection: r.try_get(1)?,
        workspaces: serde_json::from_str(&workspaces).map_err(|_| bad("workspaces"))?,
        received_at: format_ms(r.try_get(3)?),
        event: NormalizedEvent {
            kind: EventKind::parse(&kind).ok_or_else(|| bad("kind"))?,
            bounce_class: match bounce.as_deref() {
                None => None,
                Some(b) => Some(BounceClass::parse(b).ok_or_else(|| bad("bounce class"))?),
            },
            recipient: r.try_get(6)?,
            occurred_at: crate::event::format_unix_seconds(r.try_get(7)?)
                .ok_or_else(|| bad("occurred_at"))?,
            provider: r.try_get(8)?,
            provider_event_id: r.try_get(9)?,
            provider_message_id: r.try_get(10)?,
            message_id: r.try_get(11)?,
            smtp_status: r.try_get(12)?,
            enhanced_status: r.try_get(13)?,
            diagnostic: r.try_get(14)?,
        },
        plugin: PluginStamp {
            id: r.try_get(15)?,
            version: r.try_get(16)?,
            sha256: r.try_get(17)?,
        },
    })
}

/// Stores the events that are new; an event whose dedupe key is stored
/// (by this process or another, committed or committing, or earlier in
/// the same list) is a duplicate. The events, their workspaces, their
/// correlation to sent deliveries and their outbox rows are each one
/// statement over arrays for the whole list; only bounces and complaints
/// then take statements of their own (suppressions, in list order).
pub(super) fn insert_events(
    tx: &mut Tx<'_, '_>,
    events: &[NewEvent],
    next_id: &mut dyn FnMut() -> String,
    policy: SoftBouncePolicy,
) -> Result<Applied, StoreError> {
    if events.is_empty() {
        return Ok(Applied::Events {
            stored: Vec::new(),
            duplicates: 0,
        });
    }
    let ids: Vec<String> = events.iter().map(|_| next_id()).collect();
    let col = |f: &dyn Fn(&NewEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(f).collect()
    };
    let dedupe: Vec<&[u8]> = events.iter().map(|e| &e.dedupe_key[..]).collect();
    let connection = col(&|e| Some(e.connection.as_str()));
    let workspaces: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(&e.workspaces).unwrap_or_else(|_| "[]".into()))
        .collect();
    let received: Vec<i64> = events.iter().map(|e| e.received_at_ms).collect();
    let kind = col(&|e| Some(e.event.kind.as_str()));
    let bounce = col(&|e| e.event.bounce_class.map(BounceClass::as_str));
    let recipient = col(&|e| Some(e.event.recipient.as_str()));
    let keys: Vec<String> = events
        .iter()
        .map(|e| address_key(&e.event.recipient))
        .collect();
    let occurred: Vec<i64> = events.iter().map(|e| e.occurred_at).collect();
    let provider = col(&|e| Some(e.event.provider.as_str()));
    let provider_event = col(&|e| e.event.provider_event_id.as_deref());
    let provider_message = col(&|e| e.event.provider_message_id.as_deref());
    let message_id = col(&|e| e.event.message_id.as_deref());
    let smtp = col(&|e| e.event.smtp_status.as_deref());
    let enhanced = col(&|e| e.event.enhanced_status.as_deref());
    let diagnostic = col(&|e| e.event.diagnostic.as_deref());
    let plugin_id = col(&|e| Some(e.plugin.id.as_str()));
    let plugin_version = col(&|e| Some(e.plugin.version.as_str()));
    let plugin_sha = col(&|e| Some(e.plugin.sha256.as_str()));
    let rows = tx.query(
        "INSERT INTO events (id, dedupe_key, connection, workspaces, received_at, kind, \
           bounce_class, recipient, recipient_key, occurred_at, provider, provider_event_id, \
           provider_message_id, message_id, smtp_status, enhanced_status, diagnostic, plugin_id, \
           plugin_version, plugin_sha256) \
         SELECT id, dedupe_key, connection, workspaces, received_at, kind, bounce_class, \
           recipient, recipient_key, occurred_at, provider, provider_event_id, \
           provider_message_id, message_id, smtp_status, enhanced_status, diagnostic, plugin_id, \
           plugin_version, plugin_sha256 \
         FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
           $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
           $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
           $19::text[], $20::text[]) WITH ORDINALITY \
           AS u(id, dedupe_key, connection, workspaces, received_at, kind, bounce_class, \
           recipient, recipient_key, occurred_at, provider, provider_event_id, \
           provider_message_id, message_id, smtp_status, enhanced_status, diagnostic, plugin_id, \
           plugin_version, plugin_sha256, n) \
         ORDER BY n \
         ON CONFLICT (recipient_key, dedupe_key) DO NOTHING RETURNING id, seq",
        &[
            &ids,
            &dedupe,
            &connection,
            &workspaces,
            &received,
            &kind,
            &bounce,
            &recipient,
            &keys,
            &occurred,
            &provider,
            &provider_event,
            &provider_message,
            &message_id,
            &smtp,
            &enhanced,
            &diagnostic,
            &plugin_id,
            &plugin_version,
            &plugin_sha,
        ],
    )?;
    let mut seqs: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        seqs.insert(r.try_get(0)?, r.try_get(1)?);
    }
    // The stored ones, in list order.
    let stored: Vec<(usize, i64)> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| seqs.get(id).map(|seq| (i, *seq)))
        .collect();
    let (mut w_names, mut w_seqs) = (Vec::new(), Vec::new());
    for &(i, seq) in &stored {
        for w in &events[i].workspaces {
            w_names.push(w.as_str());
            w_seqs.push(seq);
        }
    }
    if !w_names.is_empty() {
        tx.execute(
            "INSERT INTO event_workspaces (workspace, seq) \
             SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
            &[&w_names, &w_seqs],
        )?;
    }
    // Soft bounces count earlier ones, so with any among them the
    // suppressions are applied event by event, in list order; without,
    // the hard bounces and complaints suppress in one statement.
    if stored
        .iter()
        .any(|&(i, _)| suppression_reason(&events[i]) == Some(SuppressionReason::SoftBounces))
    {
        for &(i, _) in &stored {
            apply_suppressions(tx, &events[i], &ids[i], policy)?;
        }
    } else {
        suppress_at_once(tx, &stored, events, &ids)?;
    }
    let stored_events: Vec<(&str, &NewEvent)> = stored
        .iter()
        .map(|&(i, _)| (ids[i].as_str(), &events[i]))
        .collect();
    queue::correlate(tx, &stored_events)?;
    outbox::enqueue(tx, &stored_events, next_id)?;
    Ok(Applied::Events {
        duplicates: events.len() - stored.len(),
        stored: stored.into_iter().map(|(i, _)| ids[i].clone()).collect(),
    })
}

/// What an event suppresses its recipient for, if anything: a complaint
/// or a hard bounce at once, other bounces once enough of them count.
fn suppression_reason(new: &NewEvent) -> Option<SuppressionReason> {
    match (new.event.kind, new.event.bounce_class) {
        (EventKind::Complained, _) => Some(SuppressionReason::Complaint),
        (EventKind::Bounced, Some(BounceClass::Hard)) => Some(SuppressionReason::HardBounce),
        (EventKind::Bounced, _) => Some(SuppressionReason::SoftBounces),
        _ => None,
    }
}

/// The suppressions of stored events none of which is a soft bounce, in
/// one statement (the first event of an address in a workspace is the
/// one recorded, as one by one), then the deliveries they end.
fn suppress_at_once(
    tx: &mut Tx<'_, '_>,
    stored: &[(usize, i64)],
    events: &[NewEvent],
    ids: &[String],
) -> Result<(), StoreError> {
    let (mut ws, mut keys, mut addresses, mut reasons, mut event_ids, mut ats) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for &(i, _) in stored {
        let new = &events[i];
        let Some(reason) = suppression_reason(new) else {
            continue;
        };
        for w in &new.workspaces {
            ws.push(w.as_str());
            keys.push(address_key(&new.event.recipient));
            addresses.push(new.event.recipient.trim());
            reasons.push(reason.as_str());
            event_ids.push(ids[i].as_str());
            ats.push(new.received_at_ms);
        }
    }
    if ws.is_empty() {
        return Ok(());
    }
    let rows = tx.query(
        "INSERT INTO suppressions (workspace, address_key, address, reason, event_id, created_at) \
         SELECT ws, key, address, reason, event_id, at FROM unnest($1::text[], $2::text[], \
           $3::text[], $4::text[], $5::text[], $6::bigint[]) WITH ORDINALITY \
           AS u(ws, key, address, reason, event_id, at, n) \
         ORDER BY n ON CONFLICT (workspace, address_key) DO NOTHING \
         RETURNING workspace, address_key, reason, created_at",
        &[&ws, &keys, &addresses, &reasons, &event_ids, &ats],
    )?;
    let mut new = Vec::with_capacity(rows.len());
    for r in &rows {
        new.push((
            r.try_get::<_, String>(0)?,
            r.try_get::<_, String>(1)?,
            r.try_get::<_, String>(2)?,
            r.try_get::<_, i64>(3)?,
        ));
    }
    let new: Vec<(&str, &str, &str, i64)> = new
        .iter()
        .map(|(w, k, r, at)| (w.as_str(), k.as_str(), r.as_str(), *at))
        .collect();
    queue::suppressed(tx, &new)
}

/// Hard bounces and complaints suppress at once; soft bounces (and bounces
/// of unknown class) once the threshold of them fall within the window.
fn apply_suppressions(
    tx: &mut Tx<'_, '_>,
    new: &NewEvent,
    id: &str,
    policy: SoftBouncePolicy,
) -> Result<(), StoreError> {
    let e = &new.event;
    let Some(reason) = suppression_reason(new) else {
        return Ok(());
    };
    let key = address_key(&e.recipient);
    for w in &new.workspaces {
        if reason == SuppressionReason::SoftBounces {
            let policy = new
                .soft_bounce_rules
                .iter()
                .find(|(name, _)| name == w)
                .map_or(policy, |(_, rule)| *rule);
            tx.execute(
                "INSERT INTO soft_bounces (workspace, address_key, event_id, occurred_at) VALUES ($1, $2, $3, $4)",
                &[w, &key, &id, &new.occurred_at],
            )?;
            let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM soft_bounces WHERE workspace = $1 AND address_key = $2 \
                     AND occurred_at > $3 AND occurred_at <= $4",
                    &[
                        w,
                        &key,
                        &new.occurred_at.saturating_sub(window),
                        &new.occurred_at,
                    ],
                )?
                .try_get(0)?;
            if count < i64::from(policy.threshold) {
                continue;
            }
        }
        suppress(
            tx,
            w,
            &e.recipient,
            reason,
            Some(id),
            None,
            new.received_at_ms,
        )?;
    }
    Ok(())
}

/// Suppresses an address in a workspace unless it already is; true if new.
pub(super) fn suppress(
    tx: &mut Tx<'_, '_>,
    workspace: &str,
    address: &str,
    reason: SuppressionReason,
    event_id: Option<&str>,
    note: Option<&str>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let key = address_key(address);
    let n = tx.execute(
        "INSERT INTO suppressions (workspace, address_key, address, reason, event_id, note, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace, address_key) DO NOTHING",
        &[
            &workspace,
            &key,
            &address.trim(),
            &reason.as_str(),
            &event_id,
            &note,
            &at_ms,
        ],
    )?;
    if n > 0 {
        queue::suppressed(tx, &[(workspace, &key, reason.as_str(), at_ms)])?;
    }
    Ok(n > 0)
}

/// Records every single-use token; false when one is already recorded,
/// not expired, for another body (a replay): the caller rolls back.
pub(super) fn record_tokens(
    tx: &mut Tx<'_, '_>,
    tokens: &[ReplayToken],
) -> Result<bool, StoreError> {
    let insert = "INSERT INTO replay_tokens (connection, token, body_sha256, expires_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (connection, token) DO UPDATE SET \
           body_sha256 = excluded.body_sha256, expires_at = excluded.expires_at \
         WHERE replay_tokens.expires_at <= $5";
    let same_body =
        "SELECT 1 FROM replay_tokens WHERE connection = $1 AND token = $2 AND body_sha256 = $3";
    for t in tokens {
        let body = &t.body_sha256[..];
        if tx.execute(
            insert,
            &[&t.connection, &t.token, &body, &t.expires_at, &t.used_at],
        )? == 0
            && tx
                .query_opt(same_body, &[&t.connection, &t.token, &body])?
                .is_none()
        {
            return Ok(false);
        }
    }
    if let Some(now) = tokens.iter().map(|t| t.used_at).max() {
        tx.execute(
            "DELETE FROM replay_tokens WHERE (connection, token) IN \
             (SELECT connection, token FROM replay_tokens WHERE expires_at <= $1 LIMIT $2)",
            &[&now, &PRUNE_PER_WRITE],
        )?;
    }
    Ok(true)
}
