//! Which connections a message may use: a workspace's connections in
//! priority order (lower `priority` first, ties by name) that allow its
//! From, or the one connection a request pinned.

use std::sync::Arc;

use super::compose::FieldError;
use crate::config::Connection;
use crate::state::Snapshot;

/// Whether `conn` may send as `email`: its own From address, or any address
/// in the same domain (compared case-insensitively).
pub fn allows_from(conn: &Connection, email: &str) -> bool {
    let own = conn.from.email.to_string();
    if own.eq_ignore_ascii_case(email) {
        return true;
    }
    let domain = |a: &str| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    domain(&own).is_some_and(|d| Some(d) == domain(email))
}

/// The connections of `workspace` in sending order.
pub fn workspace_connections(snapshot: &Snapshot, workspace: &str) -> Vec<Arc<Connection>> {
    let mut list: Vec<Arc<Connection>> = snapshot
        .connections
        .values()
        .filter(|c| c.workspaces.iter().any(|w| w == workspace))
        .cloned()
        .collect();
    list.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    list
}

/// The connections a new message may use, in order, or the field error
/// that says why there is none.
pub fn for_request(
    snapshot: &Snapshot,
    workspace: Option<&str>,
    connection: Option<&str>,
    from: Option<&str>,
) -> Result<Vec<Arc<Connection>>, FieldError> {
    let e = |field: &str, message: String| FieldError {
        field: field.into(),
        message,
    };
    match (workspace, connection) {
        (None, None) => Err(e(
            "/workspace",
            "a workspace or a connection is required".into(),
        )),
        (_, Some(name)) => {
            let Some(conn) = snapshot.connections.get(name) else {
                return Err(e("/connection", format!("no connection named {name:?}")));
            };
            if let Some(w) = workspace
                && !conn.workspaces.iter().any(|x| x == w)
            {
                return Err(e(
                    "/connection",
                    format!("connection {name:?} does not serve workspace {w:?}"),
                ));
            }
            if let Some(from) = from
                && !allows_from(conn, from)
            {
                return Err(e(
                    "/from",
                    format!(
                        "connection {name:?} sends as {} (and its domain), not {from:?}",
                        conn.from.email
                    ),
                ));
            }
            Ok(vec![conn.clone()])
        }
        (Some(w), None) => {
            let all = workspace_connections(snapshot, w);
            if all.is_empty() {
                return Err(e(
                    "/workspace",
                    format!("no connection serves workspace {w:?}"),
                ));
            }
            let Some(from) = from else {
                // The first connection's From is used; the others must allow it.
                let own = all[0].from.email.to_string();
                return Ok(all.into_iter().filter(|c| allows_from(c, &own)).collect());
            };
            let allowed: Vec<_> = all.into_iter().filter(|c| allows_from(c, from)).collect();
            if allowed.is_empty() {
                return Err(e(
                    "/from",
                    format!("no connection of workspace {w:?} may send as {from:?}"),
                ));
            }
            Ok(allowed)
        }
    }
}

/// The connection to fail over to from `current` for a delivery of
/// `workspace` sent as `from`: the next one after `current` in sending
/// order that `usable` accepts. `None` for pinned deliveries and when
/// there is no other.
pub fn failover(
    snapshot: &Snapshot,
    workspace: &str,
    pinned: bool,
    current: &str,
    from: &str,
    usable: &dyn Fn(&str) -> bool,
) -> Option<String> {
    if pinned || workspace.is_empty() {
        return None;
    }
    let list: Vec<_> = workspace_connections(snapshot, workspace)
        .into_iter()
        .filter(|c| allows_from(c, from))
        .collect();
    let at = list.iter().position(|c| c.name == current);
    // After the current one first, then from the top (a primary that came
    // back), never the current one itself.
    let order = match at {
        Some(i) => list[i + 1..]
            .iter()
            .chain(list[..i].iter())
            .collect::<Vec<_>>(),
        None => list.iter().collect(),
    };
    order
        .into_iter()
        .find(|c| c.name != current && usable(&c.name))
        .map(|c| c.name.clone())
}
