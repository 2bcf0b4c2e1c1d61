//! Queueing messages inside the group-commit transaction: messages with
//! an idempotency key one by one (a repeat returns the first one's id),
//! the others and every delivery row with one statement each.

use super::super::sql::Tx;
use crate::store::StoreError;
use crate::store::address_key;
use crate::store::queue::{Enqueued, NewMessage};

/// Queues messages (called by `apply` inside the group-commit transaction).
/// A repeated idempotency key returns the first message's id and queues
/// nothing, also when both arrive in the same commit, and when another
/// process stores the same key at the same time: the insert waits for that
/// transaction and, if it committed, this message is its duplicate.
pub(in crate::store::postgres) fn enqueue(
    tx: &mut Tx<'_, '_>,
    messages: &[NewMessage],
    now_ms: i64,
    next_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut out = Vec::with_capacity(messages.len());
    // Messages without a key cannot be duplicates: they are inserted
    // together at the end, two statements for the whole commit.
    let mut bulk = Bulk::default();
    let find = "SELECT id FROM messages WHERE idempotency_scope = $1 AND idempotency_key = $2";
    let message = "INSERT INTO messages (id, workspace, pinned_connection, idempotency_scope, idempotency_key, \
         from_email, subject, message_id_header, raw, size, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11) \
         ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING";
    for m in messages {
        let scope = m.idempotency_scope();
        let Some(key) = &m.idempotency_key else {
            let id = next_id();
            bulk.push(&id, m, scope);
            out.push(Enqueued {
                id,
                duplicate: false,
            });
            continue;
        };
        if let Some(row) = tx.query_opt(find, &[&scope, key])? {
            out.push(Enqueued {
                id: row.try_get(0)?,
                duplicate: true,
            });
            continue;
        }
        let id = next_id();
        let size = i64::try_from(m.raw.len()).unwrap_or(i64::MAX);
        let inserted = tx.execute(
            message,
            &[
                &id,
                &m.workspace,
                &m.pinned_connection,
                &scope,
                &m.idempotency_key,
                &m.from_email,
                &m.subject,
                &m.message_id_header,
                &m.raw,
                &size,
                &now_ms,
            ],
        )?;
        if inserted == 0 {
            // Committed by another process since the lookup above.
            let row = tx.query_one(find, &[&scope, key])?;
            out.push(Enqueued {
                id: row.try_get(0)?,
                duplicate: true,
            });
            continue;
        }
        bulk.recipients(&id, m);
        out.push(Enqueued {
            id,
            duplicate: false,
        });
    }
    bulk.insert(tx, now_ms)?;
    Ok(out)
}

/// Messages and deliveries gathered for one insert each.
#[derive(Default)]
struct Bulk<'a> {
    ids: Vec<String>,
    workspaces: Vec<&'a str>,
    pinned: Vec<Option<&'a str>>,
    scopes: Vec<String>,
    from: Vec<&'a str>,
    subjects: Vec<&'a str>,
    headers: Vec<&'a str>,
    raws: Vec<&'a [u8]>,
    sizes: Vec<i64>,
    d_message: Vec<String>,
    d_recipient: Vec<&'a str>,
    d_key: Vec<String>,
    d_field: Vec<&'static str>,
    d_workspace: Vec<&'a str>,
    d_connection: Vec<&'a str>,
}

impl<'a> Bulk<'a> {
    /// A message without an idempotency key, and its recipients.
    fn push(&mut self, id: &str, m: &'a NewMessage, scope: String) {
        self.ids.push(id.to_owned());
        self.workspaces.push(&m.workspace);
        self.pinned.push(m.pinned_connection.as_deref());
        self.scopes.push(scope);
        self.from.push(&m.from_email);
        self.subjects.push(&m.subject);
        self.headers.push(&m.message_id_header);
        self.raws.push(&m.raw);
        self.sizes
            .push(i64::try_from(m.raw.len()).unwrap_or(i64::MAX));
        self.recipients(id, m);
    }

    /// The recipients of a message (inserted on its own or in bulk).
    fn recipients(&mut self, id: &str, m: &'a NewMessage) {
        for (address, field) in &m.recipients {
            self.d_message.push(id.to_owned());
            self.d_recipient.push(address);
            self.d_key.push(address_key(address));
            self.d_field.push(field.as_str());
            self.d_workspace.push(&m.workspace);
            self.d_connection.push(&m.connection);
        }
    }

    fn insert(&self, tx: &mut Tx<'_, '_>, now_ms: i64) -> Result<(), StoreError> {
        if !self.ids.is_empty() {
            tx.execute(
                "INSERT INTO messages (id, workspace, pinned_connection, idempotency_scope, \
                   from_email, subject, message_id_header, raw, size, status, created_at) \
                 SELECT id, workspace, pinned, scope, from_email, subject, header, raw, size, \
                   'pending', $10 \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                   $6::text[], $7::text[], $8::bytea[], $9::bigint[]) \
                   AS u(id, workspace, pinned, scope, from_email, subject, header, raw, size)",
                &[
                    &self.ids,
                    &self.workspaces,
                    &self.pinned,
                    &self.scopes,
                    &self.from,
                    &self.subjects,
                    &self.headers,
                    &self.raws,
                    &self.sizes,
                    &now_ms,
                ],
            )?;
        }
        if !self.d_message.is_empty() {
            tx.execute(
                "INSERT INTO deliveries (message, recipient, recipient_key, field, workspace, \
                   connection, state, queued_at, next_attempt_at) \
                 SELECT message, recipient, key, field, workspace, connection, 'queued', $7, $7 \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                   WITH ORDINALITY AS u(message, recipient, key, field, workspace, connection, n) \
                 ORDER BY n",
                &[
                    &self.d_message,
                    &self.d_recipient,
                    &self.d_key,
                    &self.d_field,
                    &self.d_workspace,
                    &self.d_connection,
                    &now_ms,
                ],
            )?;
        }
        Ok(())
    }
}
