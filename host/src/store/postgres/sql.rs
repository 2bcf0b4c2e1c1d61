//! Statements prepared once per pooled client and kept, keyed by their SQL
//! text, and [`Sql`]: a client or transaction with that cache whose calls
//! take SQL text, as the `postgres` crate's do.
//!
//! The `postgres` crate runs a statement given as text by preparing it and
//! then executing it: two round trips, and a parse and plan on the server
//! for every call. A kept statement is executed in one round trip.

use std::collections::HashMap;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row, Statement, Transaction};

use crate::store::StoreError;

/// Most statements one client keeps. The backend's static SQL is a few dozen
/// statements; SQL built at run time (listings) bypasses the cache
/// ([`Sql::query_uncached`]). Should something still fill it, it is
/// emptied and fills again, so it never grows without bound.
const MAX_STATEMENTS: usize = 256;

/// The statements one client has prepared, by SQL text. Prepared
/// statements belong to the server session, not to a transaction, so a
/// rollback leaves them valid.
#[derive(Default)]
pub(crate) struct Statements {
    by_sql: HashMap<String, Statement>,
}

impl Statements {
    /// The statement of `sql`, prepared on `client` unless kept already.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.by_sql.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        if self.by_sql.len() >= MAX_STATEMENTS {
            // Dropping a statement closes it on the server.
            self.by_sql.clear();
        }
        self.by_sql.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// How many statements are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_sql.len()
    }
}

/// Whether a statement failed because its prepared form no longer fits
/// the schema: `cached plan must not change result type` (a table it reads
/// changed shape; SQLSTATE 0A000, checked by code alone since the message
/// may be translated) or a statement the session no longer has (26000).
/// Preparing it again fixes both.
fn stale(e: &postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        code == &SqlState::FEATURE_NOT_SUPPORTED || code == &SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

/// A pooled client with its statements.
pub(crate) type Db<'a> = Sql<'a, Client>;

/// A transaction (or savepoint) of a pooled client, with its statements.
pub(crate) type Tx<'a, 't> = Sql<'a, Transaction<'t>>;

/// A client (`C` = [`postgres::Client`]) or a transaction with the
/// statements of its pooled client.
pub(crate) struct Sql<'a, C> {
    client: &'a mut C,
    statements: &'a mut Statements,
    /// A failed statement aborts the transaction it is in, so it is retried
    /// only outside one.
    in_transaction: bool,
}

impl<'a, C: GenericClient> Sql<'a, C> {
    /// `client` with `statements`; `in_transaction` when `client` is one.
    pub(crate) fn new(
        client: &'a mut C,
        statements: &'a mut Statements,
        in_transaction: bool,
    ) -> Self {
        Self {
            client,
            statements,
            in_transaction,
        }
    }

    /// Like [`postgres::Client::execute`], prepared once.
    pub(crate) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.run(sql, |c, s| c.execute(s, params))
    }

    /// Like [`postgres::Client::query`], prepared once.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.run(sql, |c, s| c.query(s, params))
    }

    /// Like [`postgres::Client::query_one`], prepared once.
    pub(crate) fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        self.run(sql, |c, s| c.query_one(s, params))
    }

    /// Like [`postgres::Client::query_opt`], prepared once.
    pub(crate) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.run(sql, |c, s| c.query_opt(s, params))
    }

    /// A query whose text is built at run time (filters, page sizes): not
    /// kept, so its many variants do not crowd the cache.
    pub(crate) fn query_uncached(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        Ok(self.client.query(sql, params)?)
    }

    /// Runs `work` in a transaction (a savepoint inside one), committed if
    /// it returns `Ok`; an error rolls it back.
    pub(crate) fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Tx<'_, '_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.client.transaction()?;
        let out = work(&mut Sql::new(&mut tx, self.statements, true))?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `work` in a savepoint, kept if it returns `Some`, rolled back
    /// if it returns `None` (nothing it did is kept) or an error.
    pub(crate) fn savepoint<T>(
        &mut self,
        work: impl FnOnce(&mut Tx<'_, '_>) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut sp = self.client.transaction()?;
        match work(&mut Sql::new(&mut sp, self.statements, true))? {
            Some(out) => {
                sp.commit()?;
                Ok(Some(out))
            }
            None => {
                sp.rollback()?;
                Ok(None)
            }
        }
    }

    /// Runs `call` with the kept statement of `sql`. A statement found
    /// stale is forgotten (the next call prepares it again) and, outside a
    /// transaction, prepared and run once more: the failed run did nothing,
    /// the server refused it before executing.
    fn run<T>(
        &mut self,
        sql: &str,
        call: impl Fn(&mut C, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let statement = self.statements.get(self.client, sql)?;
        match call(self.client, &statement) {
            Err(e) if stale(&e) => {
                self.statements.by_sql.remove(sql);
                if self.in_transaction {
                    return Err(e.into());
                }
                let statement = self.statements.get(self.client, sql)?;
                Ok(call(self.client, &statement)?)
            }
            other => Ok(other?),
        }
    }
}
