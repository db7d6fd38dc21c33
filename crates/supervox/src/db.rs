//! The node's database: one SQLite file per daemon, `supervox.db` in the
//! data directory (mode 0600), for state that must survive a crash — today
//! the pinned peer keys ([`supervox_core::trust`]), the sealed peer
//! units received ([`InboxUnit`]: stored before the mailbox is
//! acknowledged, deleted once what they say is stored), and the social
//! layer's contacts, conversations, call history and settings
//! ([`StoreChange`]).
//!
//! Schema changes are migrations: [`MIGRATIONS`]`[i]` takes the schema from
//! version `i` to `i + 1`, each in its own transaction together with the new
//! version number in `schema_version`. A database from a newer build (a
//! version this one does not know) is refused rather than guessed at.
//! Every write is a transaction committed (WAL, `synchronous=FULL`) before
//! the call returns, so a pin the driver stored before reporting a call
//! connected survives `kill -9` and power loss.

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use supervox_core::social::chat::{ChatMessage, Status};
use supervox_core::social::contacts::{Contact, ContactState};
use supervox_core::social::{CallRecord, PresenceState, StoreChange};
use supervox_core::trust::{Pin, TrustChange};
use supervox_proto::UserId;

/// The database file's name in the data directory.
pub const DB_FILE: &str = "supervox.db";

/// The node database's schema (application id 0: files from before the
/// id was checked carry none).
const NODE_SCHEMA: Schema = Schema { what: "database", application_id: 0, migrations: MIGRATIONS };

/// One kind of database file: what the errors call it, the SQLite
/// `application_id` stamped in its header (so one daemon's file is not taken
/// for another's), and its migrations (entry `i` moves version `i` to `i + 1`).
pub(crate) struct Schema {
    pub what: &'static str,
    pub application_id: i32,
    pub migrations: &'static [&'static str],
}

/// Open (creating, mode 0600) the database at `path` and bring its schema
/// up to date, each migration in one transaction with the new version.
/// Refused when others may read it, when it is not a SQLite file, when it is
/// another program's database (another application id, or tables without
/// our `schema_version`), or when it comes from a newer build. WAL and
/// `synchronous=FULL`: a commit is on disk when it returns.
pub(crate) fn open_versioned(path: &Path, schema: &Schema) -> Result<Connection> {
    let what = schema.what;
    match std::fs::metadata(path) {
        Ok(meta) => crate::store::refuse_if_readable_by_others(what, path, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Created empty with the right mode first: SQLite would use the umask.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut conn = Connection::open(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    // The first read of the header: a damaged or foreign file fails here.
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .with_context(|| format!("{what} {} is not a SQLite database (damaged?)", path.display()))?;
    // WAL: a reader never blocks the writer; FULL: a commit is on disk when it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    migrate(&mut conn, schema, app).with_context(|| format!("{what} {}", path.display()))?;
    Ok(conn)
}

/// The schema version (the number of migrations applied).
pub(crate) fn schema_version(conn: &Connection) -> Result<usize> {
    let v: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .context("schema_version unreadable")?;
    Ok(usize::try_from(v.unwrap_or(0)).unwrap_or(usize::MAX))
}

/// `app`: the file's application id (stamped with the first migration, so
/// a new or empty file has none yet).
fn migrate(conn: &mut Connection, schema: &Schema, app: i32) -> Result<()> {
    let versioned: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |r| r.get::<_, i64>(0),
    )? > 0;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
    if !versioned && tables > 0 {
        bail!("tables but no schema_version: another program's database, refusing to touch it");
    }
    let fresh = tables == 0 || (versioned && schema_version(conn)? == 0);
    if app != schema.application_id && !(fresh && app == 0) {
        bail!("not a supervox {} (application_id {app:#x}): refusing to touch it", schema.what);
    }
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let mut v = schema_version(conn)?;
    let known = schema.migrations.len();
    if v > known {
        bail!("schema version {v} is newer than this build knows ({known}): refusing to touch it");
    }
    while v < known {
        let tx = conn.transaction()?;
        if v == 0 {
            tx.pragma_update(None, "application_id", schema.application_id)?;
        }
        tx.execute_batch(schema.migrations[v]).with_context(|| format!("migration to version {}", v + 1))?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", params![(v + 1) as i64])?;
        tx.commit()?;
        v += 1;
    }
    Ok(())
}

/// Schema migrations, in order: entry `i` moves version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: pinned peer keys (trust on first use).
    "CREATE TABLE pinned_keys (
        name TEXT PRIMARY KEY NOT NULL,
        user_id BLOB NOT NULL CHECK (length(user_id) = 32),
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        pending_user_id BLOB CHECK (pending_user_id IS NULL OR length(pending_user_id) = 32)
    );",
    // 2: sealed peer units received (mail items and online peer messages),
    // stored before the mailbox is acknowledged, for the social layer to open.
    "CREATE TABLE inbox_units (
        wire_id BLOB PRIMARY KEY NOT NULL CHECK (length(wire_id) = 16),
        from_user BLOB NOT NULL CHECK (length(from_user) = 32),
        sent_ms INTEGER NOT NULL,
        sealed BLOB NOT NULL
    );",
    // 3: the social layer: contacts, conversations, call history, settings.
    "CREATE TABLE contacts (
        user_id BLOB PRIMARY KEY NOT NULL CHECK (length(user_id) = 32),
        name TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('outgoing', 'incoming', 'accepted', 'blocked')),
        message TEXT NOT NULL,
        since_ms INTEGER NOT NULL
    );
    CREATE TABLE messages (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
        from_user BLOB NOT NULL CHECK (length(from_user) = 32),
        to_user BLOB NOT NULL CHECK (length(to_user) = 32),
        text TEXT NOT NULL,
        sent_ms INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('sent', 'stored', 'delivered', 'read'))
    );
    CREATE INDEX messages_by_peer ON messages (from_user, to_user, sent_ms);
    CREATE TABLE calls (
        call_id BLOB PRIMARY KEY NOT NULL CHECK (length(call_id) = 16),
        outgoing INTEGER NOT NULL,
        peer TEXT NOT NULL,
        user_id BLOB CHECK (user_id IS NULL OR length(user_id) = 32),
        start_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        path TEXT,
        mos REAL,
        missed INTEGER NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);",
];

/// Most calls kept in the history (the oldest go).
pub const MAX_CALLS: usize = 10_000;

/// Most sealed units kept in `inbox_units`: past it mail is not
/// acknowledged (its holders keep it) and online units are dropped.
pub const MAX_INBOX_UNITS: usize = 100_000;

/// One sealed unit received: its wire id, sender, sender's clock, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxUnit {
    /// The unit's wire id (mail id or peer message id).
    pub wire_id: [u8; 16],
    /// Its sender (as its signature or link authenticated it).
    pub from: UserId,
    /// The sender's clock at sending (unix ms; 0 for online units).
    pub sent_ms: u64,
    /// Sealed to us (supervox_core::social::seal).
    pub sealed: Vec<u8>,
}

/// An open node database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

fn user_id(bytes: Vec<u8>) -> rusqlite::Result<UserId> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| rusqlite::Error::InvalidQuery)?;
    Ok(UserId(arr))
}

impl Db {
    /// Open (creating, mode 0600) the database at `path` and bring its
    /// schema up to date. Refused when others may read it, or when it comes
    /// from a newer build.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { conn: open_versioned(path, &NODE_SCHEMA)? })
    }

    /// The schema version (the number of migrations applied).
    pub fn version(&self) -> Result<usize> {
        schema_version(&self.conn)
    }

    /// Every pinned key.
    pub fn pins(&self) -> Result<Vec<Pin>> {
        let mut st =
            self.conn.prepare("SELECT name, user_id, first_seen_ms, last_seen_ms, pending_user_id FROM pinned_keys")?;
        let rows = st.query_map([], |r| {
            let pending: Option<Vec<u8>> = r.get(4)?;
            Ok(Pin {
                name: r.get(0)?,
                user_id: user_id(r.get(1)?)?,
                first_seen_ms: r.get::<_, i64>(2)?.max(0) as u64,
                last_seen_ms: r.get::<_, i64>(3)?.max(0) as u64,
                pending: pending.map(user_id).transpose()?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<Pin>>>().context("pinned_keys unreadable")
    }

    /// Store sealed units in one transaction (committed when this returns,
    /// so the mailbox may be acknowledged after it); ids already stored are
    /// skipped. The ids now stored (new or not); units past
    /// [`MAX_INBOX_UNITS`] are left out.
    pub fn store_units(&mut self, units: &[InboxUnit]) -> Result<Vec<[u8; 16]>> {
        let tx = self.conn.transaction()?;
        let mut held: i64 = tx.query_row("SELECT count(*) FROM inbox_units", [], |r| r.get(0))?;
        let mut stored = Vec::with_capacity(units.len());
        for u in units {
            let known: bool =
                tx.query_row("SELECT count(*) FROM inbox_units WHERE wire_id = ?1", params![&u.wire_id[..]], |r| {
                    r.get::<_, i64>(0)
                })? > 0;
            if !known {
                if held >= MAX_INBOX_UNITS as i64 {
                    continue;
                }
                tx.execute(
                    "INSERT INTO inbox_units (wire_id, from_user, sent_ms, sealed) VALUES (?1, ?2, ?3, ?4)",
                    params![&u.wire_id[..], &u.from.0[..], u.sent_ms.min(i64::MAX as u64) as i64, &u.sealed],
                )?;
                held += 1;
            }
            stored.push(u.wire_id);
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Every stored unit, oldest first (by the sender's clock, then id).
    pub fn inbox_units(&self) -> Result<Vec<InboxUnit>> {
        let mut st = self
            .conn
            .prepare("SELECT wire_id, from_user, sent_ms, sealed FROM inbox_units ORDER BY sent_ms, wire_id")?;
        let rows = st.query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            Ok(InboxUnit {
                wire_id: id.try_into().map_err(|_| rusqlite::Error::InvalidQuery)?,
                from: user_id(r.get(1)?)?,
                sent_ms: r.get::<_, i64>(2)?.max(0) as u64,
                sealed: r.get(3)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("inbox_units unreadable")
    }

    /// Persist one change of the social layer (committed when this returns).
    pub fn apply_social(&mut self, change: &StoreChange) -> Result<()> {
        let tx = self.conn.transaction()?;
        match change {
            StoreChange::ContactPut(c) => {
                // A name moves with its entry: an old entry of the same name (another key) goes.
                tx.execute(
                    "DELETE FROM contacts WHERE name = ?1 AND user_id != ?2",
                    params![c.name, &c.user_id.0[..]],
                )?;
                tx.execute(
                    "INSERT INTO contacts (user_id, name, state, message, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(user_id) DO UPDATE SET name = ?2, state = ?3, message = ?4, since_ms = ?5",
                    params![&c.user_id.0[..], c.name, c.state.as_str(), c.message, ms(c.since_ms)],
                )?;
            }
            StoreChange::ContactGone(k) => {
                tx.execute("DELETE FROM contacts WHERE user_id = ?1", params![&k.0[..]])?;
            }
            StoreChange::Message(m) => {
                tx.execute(
                    "INSERT INTO messages (id, from_user, to_user, text, sent_ms, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(id) DO UPDATE SET status = ?6",
                    params![&m.id[..], &m.from.0[..], &m.to.0[..], m.text, ms(m.sent_ms), m.status.as_str()],
                )?;
            }
            StoreChange::Call(r) => {
                tx.execute(
                    "INSERT OR IGNORE INTO calls (call_id, outgoing, peer, user_id, start_ms, duration_ms, path, mos, missed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        &r.call_id[..],
                        r.outgoing,
                        r.peer,
                        r.user_id.map(|k| k.0.to_vec()),
                        ms(r.start_ms),
                        ms(r.duration_ms),
                        r.path,
                        r.mos,
                        r.missed
                    ],
                )?;
                tx.execute(
                    "DELETE FROM calls WHERE call_id IN (SELECT call_id FROM calls ORDER BY start_ms DESC LIMIT -1 OFFSET ?1)",
                    params![MAX_CALLS as i64],
                )?;
            }
            StoreChange::MyPresence { state, text } => {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('presence', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                    params![state.as_str()],
                )?;
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES ('status_text', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                    params![text],
                )?;
            }
            StoreChange::UnitDone(id) => {
                tx.execute("DELETE FROM inbox_units WHERE wire_id = ?1", params![&id[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The contact list (presence is live, not stored).
    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let mut st = self.conn.prepare("SELECT user_id, name, state, message, since_ms FROM contacts")?;
        let rows = st.query_map([], |r| {
            let state: String = r.get(2)?;
            Ok(Contact {
                user_id: user_id(r.get(0)?)?,
                name: r.get(1)?,
                state: ContactState::parse(&state).ok_or(rusqlite::Error::InvalidQuery)?,
                message: r.get(3)?,
                since_ms: r.get::<_, i64>(4)?.max(0) as u64,
                presence: None,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("contacts unreadable")
    }

    /// Every message, oldest first.
    pub fn messages(&self) -> Result<Vec<ChatMessage>> {
        let mut st =
            self.conn.prepare("SELECT id, from_user, to_user, text, sent_ms, status FROM messages ORDER BY sent_ms")?;
        let rows = st.query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let status: String = r.get(5)?;
            Ok(ChatMessage {
                id: id.try_into().map_err(|_| rusqlite::Error::InvalidQuery)?,
                from: user_id(r.get(1)?)?,
                to: user_id(r.get(2)?)?,
                text: r.get(3)?,
                sent_ms: r.get::<_, i64>(4)?.max(0) as u64,
                status: Status::parse(&status).ok_or(rusqlite::Error::InvalidQuery)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("messages unreadable")
    }

    /// The call history, newest first.
    pub fn calls(&self) -> Result<Vec<CallRecord>> {
        let mut st = self.conn.prepare(
            "SELECT call_id, outgoing, peer, user_id, start_ms, duration_ms, path, mos, missed FROM calls
             ORDER BY start_ms DESC",
        )?;
        let rows = st.query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let key: Option<Vec<u8>> = r.get(3)?;
            Ok(CallRecord {
                call_id: id.try_into().map_err(|_| rusqlite::Error::InvalidQuery)?,
                outgoing: r.get(1)?,
                peer: r.get(2)?,
                user_id: key.map(user_id).transpose()?,
                start_ms: r.get::<_, i64>(4)?.max(0) as u64,
                duration_ms: r.get::<_, i64>(5)?.max(0) as u64,
                path: r.get(6)?,
                mos: r.get(7)?,
                missed: r.get(8)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("calls unreadable")
    }

    /// Our presence setting, if one was stored.
    pub fn my_presence(&self) -> Result<Option<(PresenceState, String)>> {
        let get = |k: &str| -> Result<Option<String>> {
            Ok(self.conn.query_row("SELECT value FROM settings WHERE key = ?1", params![k], |r| r.get(0)).optional()?)
        };
        let state = get("presence")?.and_then(|s| PresenceState::parse(&s));
        Ok(state.map(|s| (s, get("status_text").ok().flatten().unwrap_or_default())))
    }

    /// Persist one change of the trust store (committed when this returns).
    pub fn apply(&mut self, change: &TrustChange) -> Result<()> {
        let tx = self.conn.transaction()?;
        match change {
            TrustChange::Upsert(p) => {
                tx.execute(
                    "INSERT INTO pinned_keys (name, user_id, first_seen_ms, last_seen_ms, pending_user_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(name) DO UPDATE SET user_id = ?2, first_seen_ms = ?3, last_seen_ms = ?4,
                                                     pending_user_id = ?5",
                    params![
                        p.name,
                        &p.user_id.0[..],
                        p.first_seen_ms.min(i64::MAX as u64) as i64,
                        p.last_seen_ms.min(i64::MAX as u64) as i64,
                        p.pending.as_ref().map(|k| k.0.to_vec())
                    ],
                )?;
            }
            TrustChange::Remove(name) => {
                tx.execute("DELETE FROM pinned_keys WHERE name = ?1", params![name])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn pin(name: &str, k: u8) -> Pin {
        Pin { name: name.into(), user_id: UserId([k; 32]), first_seen_ms: 5, last_seen_ms: 7, pending: None }
    }

    #[test]
    fn pins_persist_across_reopen_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.version().unwrap(), MIGRATIONS.len());
        db.apply(&TrustChange::Upsert(pin("bob", 1))).unwrap();
        db.apply(&TrustChange::Upsert(pin("carol", 2))).unwrap();
        let mut changed = pin("bob", 1);
        changed.pending = Some(UserId([9; 32]));
        changed.last_seen_ms = 70;
        db.apply(&TrustChange::Upsert(changed.clone())).unwrap();
        db.apply(&TrustChange::Remove("carol".into())).unwrap();
        drop(db);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.pins().unwrap(), vec![changed]);
    }

    #[test]
    fn readable_or_newer_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        drop(Db::open(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Db::open(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Connection::open(&path).unwrap();
        c.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(c);
        let e = format!("{:#}", Db::open(&path).unwrap_err());
        assert!(e.contains("newer than this build"), "{e}");
        // Another program's database (tables, no schema_version) and garbage are refused too.
        let other = dir.path().join("other.db");
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&other).unwrap();
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
        let e = format!("{:#}", Db::open(&other).unwrap_err());
        assert!(e.contains("another program's database"), "{e}");
        std::fs::write(&other, vec![0x5a; 4096]).unwrap();
        let e = format!("{:#}", Db::open(&other).unwrap_err());
        assert!(e.contains("not a SQLite database"), "{e}");
    }

    #[test]
    fn inbox_units_are_stored_once_survive_reopen_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut db = Db::open(&path).unwrap();
        let unit = |k: u8, sent_ms| InboxUnit { wire_id: [k; 16], from: UserId([k; 32]), sent_ms, sealed: vec![k; 9] };
        assert_eq!(db.store_units(&[unit(2, 20), unit(1, 10)]).unwrap(), vec![[2; 16], [1; 16]]);
        // A second fetch (an ack was lost) brings one again: stored once, still reported stored.
        assert_eq!(db.store_units(&[unit(1, 10), unit(3, 5)]).unwrap(), vec![[1; 16], [3; 16]]);
        drop(db);
        let mut db = Db::open(&path).unwrap();
        assert_eq!(db.inbox_units().unwrap(), vec![unit(3, 5), unit(1, 10), unit(2, 20)]);
        // Full: a new unit is left out (so its mail is not acknowledged).
        db.conn
            .execute(
                "INSERT INTO inbox_units (wire_id, from_user, sent_ms, sealed)
                 WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 SELECT randomblob(16), zeroblob(32), 0, x'00' FROM n",
                params![(100 + MAX_INBOX_UNITS - 4) as i64],
            )
            .unwrap();
        assert_eq!(db.store_units(&[unit(4, 1), unit(1, 10)]).unwrap(), vec![[1; 16]]);
    }

    #[test]
    fn a_version_0_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        // An empty SQLite file (as a crash right after creating it would leave) is version 0.
        let db = Db::open(&path).unwrap();
        assert_eq!(db.version().unwrap(), MIGRATIONS.len());
        assert!(db.pins().unwrap().is_empty());
    }

    #[test]
    fn social_state_round_trips_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut db = Db::open(&path).unwrap();
        let c = Contact {
            name: "bob".into(),
            user_id: UserId([1; 32]),
            state: ContactState::Incoming,
            message: "hi".into(),
            since_ms: 5,
            presence: None,
        };
        db.apply_social(&StoreChange::ContactPut(c.clone())).unwrap();
        let accepted = Contact { state: ContactState::Accepted, ..c.clone() };
        db.apply_social(&StoreChange::ContactPut(accepted.clone())).unwrap();
        let m = ChatMessage {
            id: [3; 16],
            from: UserId([1; 32]),
            to: UserId([2; 32]),
            text: "yo".into(),
            sent_ms: 9,
            status: Status::Delivered,
        };
        db.apply_social(&StoreChange::Message(m.clone())).unwrap();
        db.apply_social(&StoreChange::Message(ChatMessage { status: Status::Read, ..m.clone() })).unwrap();
        db.apply_social(&StoreChange::MyPresence { state: PresenceState::Busy, text: "work".into() }).unwrap();
        db.store_units(&[InboxUnit { wire_id: [4; 16], from: UserId([1; 32]), sent_ms: 1, sealed: vec![1] }]).unwrap();
        db.apply_social(&StoreChange::UnitDone([4; 16])).unwrap();
        for i in 0..(MAX_CALLS as u64 + 5) {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            let r = CallRecord {
                call_id: id,
                outgoing: i % 2 == 0,
                peer: "bob".into(),
                user_id: None,
                start_ms: i,
                duration_ms: 10,
                path: Some("direct-udp".into()),
                mos: Some(4.1),
                missed: false,
            };
            db.apply_social(&StoreChange::Call(r)).unwrap();
        }
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.contacts().unwrap(), vec![accepted]);
        assert_eq!(db.messages().unwrap(), vec![ChatMessage { status: Status::Read, ..m }]);
        assert_eq!(db.my_presence().unwrap(), Some((PresenceState::Busy, "work".into())));
        assert!(db.inbox_units().unwrap().is_empty());
        let calls = db.calls().unwrap();
        assert_eq!(calls.len(), MAX_CALLS);
        assert_eq!(calls[0].start_ms, MAX_CALLS as u64 + 4, "newest first, the oldest dropped");
    }
}
