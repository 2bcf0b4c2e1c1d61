//! Events in SQLite: the listing query (which index leads for which
//! filters), the row format, and the insert path of a group commit
//! (de-duplication, workspaces, suppressions, outbox rows).

use rusqlite::params;
use rusqlite::types::Value as SqlValue;

use super::{decode_cursor, outbox};
use crate::event::{
    BounceClass, DeliveryEvent, EVENT_SCHEMA_VERSION, EventKind, NormalizedEvent, PluginStamp,
};
use crate::store::{
    Applied, EventQuery, NewEvent, Order, SoftBouncePolicy, StoreError, SuppressionReason,
    address_key, format_ms,
};

/// The SQL of an event listing, its arguments and the page size.
pub(super) fn event_listing(q: &EventQuery) -> Result<(String, Vec<SqlValue>, usize), StoreError> {
    // A workspace without a recipient walks that workspace's rows in
    // order; otherwise the recipient index (the most selective) or the
    // connection or kind index leads and the workspace is a lookup.
    let by_workspace = q.workspace.is_some() && q.recipient.is_none();
    let (from, seq) = if by_workspace {
        (
            "event_workspaces w CROSS JOIN events e ON e.seq = w.seq",
            "w.seq",
        )
    } else {
        ("events e", "e.seq")
    };
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM {from} WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: SqlValue| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(c) = &q.connection {
        arg(&mut sql, " AND e.connection = ?", c.clone().into());
    }
    if let Some(w) = &q.workspace {
        let clause = if by_workspace {
            " AND w.workspace = ?"
        } else {
            " AND EXISTS (SELECT 1 FROM event_workspaces x WHERE x.workspace = ? AND x.seq = e.seq)"
        };
        arg(&mut sql, clause, w.clone().into());
    }
    if let Some(k) = q.kind {
        arg(&mut sql, " AND e.kind = ?", k.as_str().to_owned().into());
    }
    if let Some(r) = &q.recipient {
        arg(&mut sql, " AND e.recipient_key = ?", address_key(r).into());
    }
    if let Some(t) = q.since {
        arg(&mut sql, " AND e.occurred_at >= ?", t.into());
    }
    if let Some(t) = q.until {
        arg(&mut sql, " AND e.occurred_at < ?", t.into());
    }
    if let Some(a) = &q.after {
        // The newest event at or before that id (ids grow with seq), so
        // an id that is not stored still positions the tail.
        arg(
            &mut sql,
            &format!(
                " AND {seq} > coalesce((SELECT seq FROM events WHERE id <= ? ORDER BY id DESC LIMIT 1), 0)"
            ),
            a.clone().into(),
        );
    }
    if let Some(c) = &q.cursor {
        let (order, at) = decode_cursor(c)?;
        let at: i64 = at.parse().map_err(|_| StoreError::BadCursor)?;
        if order != q.order {
            return Err(StoreError::BadCursor);
        }
        let op = if order == Order::Asc { ">" } else { "<" };
        arg(&mut sql, &format!(" AND {seq} {op} ?"), at.into());
    }
    let limit = q.limit.clamp(1, 1000);
    let dir = match q.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    sql.push_str(&format!(" ORDER BY {seq} {dir} LIMIT {}", limit + 1));
    Ok((sql, args, limit))
}

pub(super) const EVENT_COLUMNS: &str = "e.id, e.connection, e.workspaces, e.received_at, e.kind, e.bounce_class, \
     e.recipient, e.occurred_at, e.provider, e.provider_event_id, e.provider_message_id, \
     e.message_id, e.smtp_status, e.enhanced_status, e.diagnostic, e.plugin_id, \
     e.plugin_version, e.plugin_sha256, e.seq";

/// The index of `e.seq` in [`EVENT_COLUMNS`].
pub(super) const SEQ_COLUMN: usize = 18;

pub(super) fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryEvent> {
    let workspaces: String = r.get(2)?;
    let kind: String = r.get(4)?;
    let bounce: Option<String> = r.get(5)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored {what} is invalid").into(),
        )
    };
    Ok(DeliveryEvent {
        schema_version: EVENT_SCHEMA_VERSION,
        id: r.get(0)?,
        connection: r.get(1)?,
        workspaces: serde_json::from_str(&workspaces).map_err(|_| bad("workspaces"))?,
        received_at: format_ms(r.get(3)?),
        event: NormalizedEvent {
            kind: EventKind::parse(&kind).ok_or_else(|| bad("kind"))?,
            bounce_class: match bounce.as_deref() {
                None => None,
                Some(b) => Some(BounceClass::parse(b).ok_or_else(|| bad("bounce class"))?),
            },
            recipient: r.get(6)?,
            occurred_at: crate::event::format_unix_seconds(r.get(7)?)
                .ok_or_else(|| bad("occurred_at"))?,
            provider: r.get(8)?,
            provider_event_id: r.get(9)?,
            provider_message_id: r.get(10)?,
            message_id: r.get(11)?,
            smtp_status: r.get(12)?,
            enhanced_status: r.get(13)?,
            diagnostic: r.get(14)?,
        },
        plugin: PluginStamp {
            id: r.get(15)?,
            version: r.get(16)?,
            sha256: r.get(17)?,
        },
    })
}

pub(super) fn insert_events(
    tx: &rusqlite::Connection,
    events: &[NewEvent],
    next_id: &mut dyn FnMut() -> String,
    policy: SoftBouncePolicy,
) -> rusqlite::Result<Applied> {
    let mut stored = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (id, dedupe_key, connection, workspaces, received_at, kind, \
         bounce_class, recipient, recipient_key, occurred_at, provider, provider_event_id, \
         provider_message_id, message_id, smtp_status, enhanced_status, diagnostic, plugin_id, \
         plugin_version, plugin_sha256) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
         ON CONFLICT (recipient_key, dedupe_key) DO NOTHING",
    )?;
    let mut workspace = tx.prepare_cached(
        "INSERT INTO event_workspaces (workspace, seq) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for new in events {
        let id = next_id();
        let e = &new.event;
        let workspaces = serde_json::to_string(&new.workspaces).unwrap_or_else(|_| "[]".into());
        let bounce = e.bounce_class.map(BounceClass::as_str);
        let key = address_key(&e.recipient);
        let n = insert.execute(params![
            id,
            &new.dedupe_key[..],
            new.connection,
            workspaces,
            new.received_at_ms,
            e.kind.as_str(),
            bounce,
            e.recipient,
            key,
            new.occurred_at,
            e.provider,
            e.provider_event_id,
            e.provider_message_id,
            e.message_id,
            e.smtp_status,
            e.enhanced_status,
            e.diagnostic,
            new.plugin.id,
            new.plugin.version,
            new.plugin.sha256,
        ])?;
        if n == 0 {
            duplicates += 1;
            continue;
        }
        let seq = tx.last_insert_rowid();
        for w in &new.workspaces {
            workspace.execute(params![w, seq])?;
        }
        apply_suppressions(tx, new, &id, policy)?;
        super::queue::correlate(tx, e, &id, new.occurred_at)?;
        outbox::enqueue(tx, &id, new, next_id)?;
        stored.push(id);
    }
    Ok(Applied::Events { stored, duplicates })
}

/// Hard bounces and complaints suppress at once; soft bounces (and bounces
/// of unknown class) once the threshold of them fall within the window: the
/// workspace's own rule if the event carries one, else `policy`.
pub(super) fn apply_suppressions(
    tx: &rusqlite::Connection,
    new: &NewEvent,
    id: &str,
    policy: SoftBouncePolicy,
) -> rusqlite::Result<()> {
    let e = &new.event;
    let reason = match (e.kind, e.bounce_class) {
        (EventKind::Complained, _) => SuppressionReason::Complaint,
        (EventKind::Bounced, Some(BounceClass::Hard)) => SuppressionReason::HardBounce,
        (EventKind::Bounced, _) => SuppressionReason::SoftBounces,
        _ => return Ok(()),
    };
    let key = address_key(&e.recipient);
    for w in &new.workspaces {
        if reason == SuppressionReason::SoftBounces {
            let policy = new
                .soft_bounce_rules
                .iter()
                .find(|(name, _)| name == w)
                .map_or(policy, |(_, rule)| *rule);
            tx.prepare_cached(
                "INSERT INTO soft_bounces (workspace, address_key, event_id, occurred_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![w, key, id, new.occurred_at])?;
            let window = i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX);
            let count: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM soft_bounces WHERE workspace = ?1 AND address_key = ?2 AND occurred_at > ?3 AND occurred_at <= ?4",
                )?
                .query_row(
                    params![w, key, new.occurred_at.saturating_sub(window), new.occurred_at],
                    |r| r.get(0),
                )?;
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

pub(super) fn suppress(
    tx: &rusqlite::Connection,
    workspace: &str,
    address: &str,
    reason: SuppressionReason,
    event_id: Option<&str>,
    note: Option<&str>,
    at_ms: i64,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT INTO suppressions (workspace, address_key, address, reason, event_id, note, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (workspace, address_key) DO NOTHING",
        )?
        .execute(params![
            workspace,
            address_key(address),
            address.trim(),
            reason.as_str(),
            event_id,
            note,
            at_ms
        ])?;
    if n > 0 {
        super::queue::suppressed(tx, workspace, &address_key(address), reason.as_str(), at_ms)?;
    }
    Ok(n > 0)
}
