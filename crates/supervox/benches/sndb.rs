//! What the supernode's write-ahead persistence costs (`sn/db.rs`): every
//! batch of changes is one SQLite transaction committed with
//! `synchronous=FULL` (an fsync of the WAL) before the outputs that follow
//! leave. Measures, on the data directory's file system (a temp dir, or
//! `SUPERVOX_SNDB_DIR`): commits of one claim, of 16 claims (one overlay
//! `Store` packet, as a join's hand-off brings them), of one mail item (a
//! `MailPut`), and the start-up load of what was written.
//!
//! `cargo bench -p supervox --bench sndb` (`-- N` claims, default 2000).

use std::time::Instant;
use supervox::sn::db::{Pending, SnDb, SN_DB_FILE};
use supervox_core::supernode::mailbox::MailChange;
use supervox_core::Identity;
use supervox_proto::mail::{MailItem, MAX_MAIL_LIFETIME_MS};
use supervox_proto::NameClaim;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let base = std::env::var_os("SUPERVOX_SNDB_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let mut db = SnDb::open(&dir.path().join(SN_DB_FILE)).unwrap();
    let ids: Vec<Identity> = (0..64u8).map(|i| Identity::from_seed([i; 32])).collect();
    let claims: Vec<NameClaim> =
        (0..2 * n).map(|i| NameClaim::sign(ids[i % 64].signing_key(), &format!("user{i}"), 1).unwrap()).collect();
    println!("supernode.db commit cost ({n} claims per row, {})", dir.path().display());
    println!("| batch | commits | total s | ms per commit | changes/s |");
    println!("|---|---|---|---|---|");
    let mut row = |label: &str, batches: Vec<Pending>, per: usize| {
        let commits = batches.len();
        let t = Instant::now();
        for mut p in batches {
            db.commit(&mut p).unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "| {label} | {commits} | {s:.2} | {:.2} | {:.0} |",
            s * 1000.0 / commits as f64,
            (commits * per) as f64 / s
        );
    };
    let one: Vec<Pending> = claims[..n]
        .iter()
        .map(|c| {
            let mut p = Pending::default();
            p.claim(c.clone());
            p
        })
        .collect();
    row("1 claim", one, 1);
    let sixteen: Vec<Pending> = claims[n..]
        .chunks(16)
        .map(|cs| {
            let mut p = Pending::default();
            cs.iter().for_each(|c| p.claim(c.clone()));
            p
        })
        .collect();
    row("16 claims", sixteen, 16);
    let now = supervox::links::now_ms();
    let mail: Vec<Pending> = (0..n)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let item = MailItem::sign(
                ids[i % 64].signing_key(),
                id,
                ids[(i + 1) % 64].user_id(),
                now,
                MAX_MAIL_LIFETIME_MS,
                vec![7; 1000],
            );
            let mut p = Pending::default();
            p.mail(MailChange::Stored(item));
            p
        })
        .collect();
    row("1 mail item (1 KB body)", mail, 1);
    drop(db);
    let t = Instant::now();
    let db = SnDb::open(&dir.path().join(SN_DB_FILE)).unwrap();
    let (c, m, tomb) = (db.claims().unwrap().len(), db.mail_items().unwrap().len(), db.tombstones().unwrap().len());
    println!("start-up load: {c} claims, {m} mail items, {tomb} tombstones in {:.3} s", t.elapsed().as_secs_f64());
}
