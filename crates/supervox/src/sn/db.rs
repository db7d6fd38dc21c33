//! The supernode's database: one SQLite file, `supernode.db` in its data
//! directory (mode 0600), opened with the node database's discipline
//! ([`crate::db::open_versioned`]: WAL, `synchronous=FULL`, migrations in
//! transactions, a newer or foreign file refused). It holds the name claims
//! and the offline mailboxes (PROTOCOL.md §8): the core emits every change
//! ([`SnOutput::ClaimStored`], [`SnOutput::Mail`]) and the driver commits
//! them here, a batch per transaction, before it sends any output queued
//! after them, so nothing acknowledged is lost to `kill -9`.
//!
//! [`SnOutput::ClaimStored`]: supervox_core::supernode::SnOutput::ClaimStored
//! [`SnOutput::Mail`]: supervox_core::supernode::SnOutput::Mail

use crate::db::{open_versioned, schema_version, Schema};
use anyhow::{Context, Result};
use ed25519_dalek::Signature;
use rusqlite::{params, Connection, Transaction};
use std::path::Path;
use supervox_core::supernode::mailbox::MailChange;
use supervox_proto::mail::{MailId, MailItem};
use supervox_proto::{NameClaim, UserId};

/// The database file's name in the supernode's data directory.
pub const SN_DB_FILE: &str = "supernode.db";

/// Stamped in the file's header: "SVSN".
const APPLICATION_ID: i32 = 0x5356_534e;

/// Schema migrations, in order: entry `i` moves version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: name claims (by name: a claim is replaced, never deleted), mail
    // items by (recipient, id) as MailStore keys them, and the ids
    // acknowledged (tombstones, oldest first by rowid).
    "CREATE TABLE claims (
        name TEXT PRIMARY KEY NOT NULL,
        user_id BLOB NOT NULL CHECK (length(user_id) = 32),
        created_ms INTEGER NOT NULL,
        signature BLOB NOT NULL CHECK (length(signature) = 64)
    );
    CREATE TABLE mail_items (
        recipient BLOB NOT NULL CHECK (length(recipient) = 32),
        id BLOB NOT NULL CHECK (length(id) = 16),
        sender BLOB NOT NULL CHECK (length(sender) = 32),
        sent_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        body BLOB NOT NULL,
        signature BLOB NOT NULL CHECK (length(signature) = 64),
        PRIMARY KEY (recipient, id)
    );
    CREATE TABLE mail_tombstones (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16)
    );",
];

const SN_SCHEMA: Schema = Schema { what: "supernode database", application_id: APPLICATION_ID, migrations: MIGRATIONS };

/// Changes the core emitted, not yet committed.
#[derive(Debug, Default)]
pub struct Pending {
    claims: Vec<NameClaim>,
    mail: Vec<MailChange>,
}

impl Pending {
    /// A claim stored by the core.
    pub fn claim(&mut self, c: NameClaim) {
        self.claims.push(c);
    }

    /// A change of the mailboxes (kept in order).
    pub fn mail(&mut self, c: MailChange) {
        self.mail.push(c);
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.mail.is_empty()
    }
}

/// An open supernode database.
#[derive(Debug)]
pub struct SnDb {
    conn: Connection,
}

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn bytes<const N: usize>(v: Vec<u8>) -> rusqlite::Result<[u8; N]> {
    v.try_into().map_err(|_| rusqlite::Error::InvalidQuery)
}

fn signature(v: Vec<u8>) -> rusqlite::Result<Signature> {
    Ok(Signature::from_bytes(&bytes::<64>(v)?))
}

impl SnDb {
    /// Open (creating, mode 0600) the database at `path`, schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { conn: open_versioned(path, &SN_SCHEMA)? })
    }

    /// The schema version (the number of migrations applied).
    pub fn version(&self) -> Result<usize> {
        schema_version(&self.conn)
    }

    /// Every stored claim.
    pub fn claims(&self) -> Result<Vec<NameClaim>> {
        let mut st = self.conn.prepare("SELECT name, user_id, created_ms, signature FROM claims")?;
        let rows = st.query_map([], |r| {
            Ok(NameClaim {
                name: r.get(0)?,
                user_id: UserId(bytes(r.get(1)?)?),
                created_ms: r.get::<_, i64>(2)?.max(0) as u64,
                signature: signature(r.get(3)?)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("claims unreadable")
    }

    /// Every stored mail item (the core checks them again at restore).
    pub fn mail_items(&self) -> Result<Vec<MailItem>> {
        let mut st =
            self.conn.prepare("SELECT recipient, id, sender, sent_ms, expires_ms, body, signature FROM mail_items")?;
        let rows = st.query_map([], |r| {
            Ok(MailItem {
                to: UserId(bytes(r.get(0)?)?),
                id: bytes(r.get(1)?)?,
                from: UserId(bytes(r.get(2)?)?),
                sent_ms: r.get::<_, i64>(3)?.max(0) as u64,
                expires_ms: r.get::<_, i64>(4)?.max(0) as u64,
                body: r.get(5)?,
                signature: signature(r.get(6)?)?,
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("mail_items unreadable")
    }

    /// The acknowledged ids remembered, oldest first.
    pub fn tombstones(&self) -> Result<Vec<MailId>> {
        let mut st = self.conn.prepare("SELECT id FROM mail_tombstones ORDER BY rowid")?;
        let rows = st.query_map([], |r| bytes::<16>(r.get(0)?))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().context("mail_tombstones unreadable")
    }

    /// Commit what waits in one transaction (on disk when this returns),
    /// leaving `pending` empty. On an error nothing of it is stored.
    pub fn commit(&mut self, pending: &mut Pending) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for c in &pending.claims {
            put_claim(&tx, c)?;
        }
        for m in &pending.mail {
            apply_mail(&tx, m)?;
        }
        tx.commit().context("cannot commit to the supernode database")?;
        pending.claims.clear();
        pending.mail.clear();
        Ok(())
    }

    /// Import claims (from `claims.json`) in one transaction.
    pub fn import_claims(&mut self, claims: &[NameClaim]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for c in claims {
            put_claim(&tx, c)?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn put_claim(tx: &Transaction, c: &NameClaim) -> Result<()> {
    tx.execute(
        "INSERT INTO claims (name, user_id, created_ms, signature) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET user_id = ?2, created_ms = ?3, signature = ?4",
        params![c.name, &c.user_id.0[..], ms(c.created_ms), &c.signature.to_bytes()[..]],
    )?;
    Ok(())
}

fn apply_mail(tx: &Transaction, m: &MailChange) -> Result<()> {
    // Exhaustive: a change the core adds does not build until it is stored here.
    match m {
        MailChange::Stored(i) => {
            tx.execute(
                "INSERT OR IGNORE INTO mail_items (recipient, id, sender, sent_ms, expires_ms, body, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &i.to.0[..],
                    &i.id[..],
                    &i.from.0[..],
                    ms(i.sent_ms),
                    ms(i.expires_ms),
                    &i.body,
                    &i.signature.to_bytes()[..]
                ],
            )?;
        }
        MailChange::Acked { to, ids } => {
            for id in ids {
                tx.execute("DELETE FROM mail_items WHERE recipient = ?1 AND id = ?2", params![&to.0[..], &id[..]])?;
                tx.execute("INSERT OR IGNORE INTO mail_tombstones (id) VALUES (?1)", params![&id[..]])?;
            }
        }
        MailChange::Forgotten(ids) => {
            for id in ids {
                tx.execute("DELETE FROM mail_tombstones WHERE id = ?1", params![&id[..]])?;
            }
        }
        MailChange::Dropped(keys) => {
            for (to, id) in keys {
                tx.execute("DELETE FROM mail_items WHERE recipient = ?1 AND id = ?2", params![&to.0[..], &id[..]])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use supervox_core::Identity;
    use supervox_proto::mail::MAX_MAIL_LIFETIME_MS;

    fn item(from: &Identity, to: &Identity, n: u8) -> MailItem {
        MailItem::sign(
            from.signing_key(),
            [n; 16],
            to.user_id(),
            1_000 + u64::from(n),
            MAX_MAIL_LIFETIME_MS,
            vec![n; 50],
        )
    }

    #[test]
    fn claims_mail_and_tombstones_survive_reopen_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SN_DB_FILE);
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut db = SnDb::open(&path).unwrap();
        assert_eq!(db.version().unwrap(), MIGRATIONS.len());
        let mut p = Pending::default();
        let first = NameClaim::sign(a.signing_key(), "x", 5).unwrap();
        let earlier = NameClaim::sign(b.signing_key(), "x", 4).unwrap();
        p.claim(first);
        p.claim(earlier.clone());
        for n in 0..4 {
            p.mail(MailChange::Stored(item(&a, &b, n)));
        }
        p.mail(MailChange::Stored(item(&a, &b, 0)));
        p.mail(MailChange::Acked { to: b.user_id(), ids: vec![[0; 16], [1; 16], [9; 16]] });
        p.mail(MailChange::Forgotten(vec![[9; 16]]));
        p.mail(MailChange::Dropped(vec![(b.user_id(), [3; 16])]));
        db.commit(&mut p).unwrap();
        assert!(p.is_empty());
        drop(db);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let db = SnDb::open(&path).unwrap();
        assert_eq!(db.claims().unwrap(), vec![earlier], "the replacing claim is the one kept");
        assert_eq!(db.mail_items().unwrap(), vec![item(&a, &b, 2)]);
        assert_eq!(db.tombstones().unwrap(), vec![[0; 16], [1; 16]]);
    }

    #[test]
    fn garbage_foreign_and_newer_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SN_DB_FILE);
        let private = |p: &Path| {
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).unwrap();
        };
        private(&path);
        std::fs::write(&path, b"not a database, just bytes that happen to be here".repeat(100)).unwrap();
        let e = format!("{:#}", SnDb::open(&path).unwrap_err());
        assert!(e.contains("is not a SQLite database"), "{e}");
        // The node's database is a SQLite file of another schema.
        let node = dir.path().join(crate::db::DB_FILE);
        drop(crate::db::Db::open(&node).unwrap());
        let e = format!("{:#}", SnDb::open(&node).unwrap_err());
        assert!(e.contains("not a supervox supernode database"), "{e}");
        // And ours is not taken for the node's.
        let ours = dir.path().join("ours.db");
        drop(SnDb::open(&ours).unwrap());
        let e = format!("{:#}", crate::db::Db::open(&ours).unwrap_err());
        assert!(e.contains("not a supervox database"), "{e}");
        // Any other program's SQLite file.
        let other = dir.path().join("other.db");
        private(&other);
        Connection::open(&other).unwrap().execute_batch("CREATE TABLE claims (x INTEGER);").unwrap();
        let e = format!("{:#}", SnDb::open(&other).unwrap_err());
        assert!(e.contains("another program's database"), "{e}");
        // A newer build's.
        Connection::open(&ours).unwrap().execute("UPDATE schema_version SET version = 7", []).unwrap();
        let e = format!("{:#}", SnDb::open(&ours).unwrap_err());
        assert!(e.contains("newer than this build"), "{e}");
        // Readable by others.
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", SnDb::open(&ours).unwrap_err());
        assert!(e.contains("readable by others"), "{e}");
    }
}
