//! Offline mail on the index (PROTOCOL.md §8) against real supernode
//! processes: mail left for a user who is offline survives one of its
//! mailbox's holders being killed, arrives oldest first at the user's
//! sign-in on another supernode, cannot be fetched or deleted by anyone else,
//! and is gone once its owner acknowledges it; mail and claims a supernode
//! acknowledged survive its `kill -9` (its database, `sn/db.rs`).

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use raw::{now, Raw};
use std::time::{Duration, Instant};
use supervox_core::Identity;
use supervox_proto::mail::{MailAck, MailFetch, MailItem, MAX_MAIL_LIFETIME_MS};
use supervox_proto::{Message, NameClaim};

/// Fetch `raw`'s mailbox: the ids of the items, in the order they came.
fn fetch(raw: &mut Raw, fetch: MailFetch) -> Vec<[u8; 16]> {
    raw.send(Message::MailFetch { fetch });
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.checked_duration_since(Instant::now()).expect("the fetch never finished");
        match raw.try_recv(left) {
            Some(Message::Mail { items, done, .. }) => {
                ids.extend(items.iter().map(|i| i.id));
                if done {
                    return ids;
                }
            }
            Some(Message::Error { reason }) => panic!("fetch refused: {reason}"),
            Some(_) => {}
            None => panic!("no answer to the fetch"),
        }
    }
}

#[test]
fn mail_for_an_offline_user_survives_a_holder_and_only_its_owner_reads_or_deletes_it() {
    let root = tempfile::tempdir().unwrap();
    let sn1 = start_sn(root.path(), "sn1", &[]);
    let sn2 = start_sn(root.path(), "sn2", &[sn1.addr]);
    let sn3 = start_sn(root.path(), "sn3", &[sn1.addr]);
    // Three supernodes: every one of them holds every mailbox (R = 3).
    std::thread::sleep(Duration::from_secs(3));
    let mut alice = Raw::connect(sn1.addr, 81);
    alice.sign_in("alice");
    let bob = Identity::from_seed([82; 32]);
    let t = now();
    let items: Vec<MailItem> = (0..3u8)
        .map(|n| {
            MailItem::sign(
                alice.id.signing_key(),
                [n; 16],
                bob.user_id(),
                t + u64::from(n),
                MAX_MAIL_LIFETIME_MS,
                vec![n; 300],
            )
        })
        .collect();
    for it in &items {
        alice.send(Message::MailPut { item: it.clone() });
        match alice.try_recv(Duration::from_secs(5)) {
            Some(Message::MailPutResult { id, result: Ok(()) }) => assert_eq!(id, it.id),
            m => panic!("not stored: {m:?}"),
        }
    }
    // Alice cannot leave mail under bob's name, nor an item too large.
    let forged = MailItem::sign(bob.signing_key(), [9; 16], bob.user_id(), t, 60_000, vec![]);
    alice.send(Message::MailPut { item: forged });
    assert!(matches!(alice.try_recv(Duration::from_secs(5)), Some(Message::MailPutResult { result: Err(_), .. })));
    let big = MailItem::sign(alice.id.signing_key(), [8; 16], bob.user_id(), t, 60_000, vec![0; 7000]);
    alice.send(Message::MailPut { item: big });
    match alice.try_recv(Duration::from_secs(5)) {
        Some(Message::MailPutResult { result: Err(e), .. }) => assert!(e.contains("exceeds"), "{e}"),
        m => panic!("{m:?}"),
    }
    // One holder dies; bob signs in on another supernode.
    drop(sn3);
    let mut bob_raw = Raw::connect_as_identity(sn2.addr, bob.clone());
    bob_raw.sign_in("bob");
    // Alice cannot read bob's mailbox, not even with a fetch bob signed for himself
    // earlier and she replays from her own link.
    let mut hers = MailFetch::sign(alice.id.signing_key(), now());
    hers.to = bob.user_id();
    alice.send(Message::MailFetch { fetch: hers });
    assert!(matches!(alice.try_recv(Duration::from_secs(5)), Some(Message::Error { .. })));
    let bobs = MailFetch::sign(bob.signing_key(), now());
    alice.send(Message::MailFetch { fetch: bobs });
    assert!(matches!(alice.try_recv(Duration::from_secs(5)), Some(Message::Error { .. })));
    // Bob gets all three, oldest first, once each.
    let got = fetch(&mut bob_raw, MailFetch::sign(bob.signing_key(), now()));
    assert_eq!(got, vec![[0; 16], [1; 16], [2; 16]]);
    // An ack alice signs for bob's mailbox deletes nothing (refused at her supernode).
    let mut forged_ack = MailAck::sign(alice.id.signing_key(), vec![[0; 16]], now());
    forged_ack.to = bob.user_id();
    alice.send(Message::MailAck { ack: forged_ack });
    assert!(matches!(alice.try_recv(Duration::from_secs(5)), Some(Message::Error { .. })));
    assert_eq!(fetch(&mut bob_raw, MailFetch::sign(bob.signing_key(), now())).len(), 3);
    // Bob's own ack deletes them from every holder.
    bob_raw.send(Message::MailAck { ack: MailAck::sign(bob.signing_key(), got, now()) });
    std::thread::sleep(Duration::from_millis(300));
    assert!(fetch(&mut bob_raw, MailFetch::sign(bob.signing_key(), now())).is_empty());
    drop(sn1);
}

#[test]
fn mail_and_a_claim_acknowledged_before_a_kill_9_are_there_after_the_restart() {
    let root = tempfile::tempdir().unwrap();
    // One supernode: the only holder of every mailbox and claim, so after
    // its kill the mail and the claim exist on its disk or nowhere.
    let sn = start_sn(root.path(), "sn1", &[]);
    let addr = sn.addr;
    let mut alice = Raw::connect(addr, 81);
    alice.sign_in("alice");
    let bob = Identity::from_seed([82; 32]);
    let t = now();
    let ids: Vec<[u8; 16]> = (0..2u8).map(|n| [n + 1; 16]).collect();
    for (n, id) in ids.iter().enumerate() {
        let item = MailItem::sign(
            alice.id.signing_key(),
            *id,
            bob.user_id(),
            t + n as u64,
            MAX_MAIL_LIFETIME_MS,
            vec![7; 200],
        );
        alice.send(Message::MailPut { item });
        match alice.try_recv(Duration::from_secs(5)) {
            Some(Message::MailPutResult { id: got, result: Ok(()) }) => assert_eq!(got, *id),
            m => panic!("not stored: {m:?}"),
        }
    }
    // Carol claims a name; the supernode is killed the moment it says yes.
    let mut carol = Raw::connect(addr, 83);
    while carol.try_recv(Duration::from_millis(200)).is_some() {}
    carol.send(Message::Claim { claim: NameClaim::sign(carol.id.signing_key(), "carol", now()).unwrap() });
    match carol.recv() {
        Message::ClaimResult { result: Ok(()), .. } => {}
        m => panic!("claim refused: {m:?}"),
    }
    drop(sn);
    drop((alice, carol));
    let sn = start_sn_at(root.path(), "sn1", addr, &[]);
    assert!(sn.dir.join("supernode.db").exists());
    // The name is still carol's: another key's claim is refused.
    let mut mallory = Raw::connect(addr, 84);
    while mallory.try_recv(Duration::from_millis(200)).is_some() {}
    mallory.send(Message::Claim { claim: NameClaim::sign(mallory.id.signing_key(), "carol", now()).unwrap() });
    match mallory.recv() {
        Message::ClaimResult { result: Err(e), .. } => assert_eq!(e, supervox_proto::Refusal::Taken),
        m => panic!("the claim was lost: {m:?}"),
    }
    // Bob signs in and gets both items, which his ack then deletes for good.
    let mut bob_raw = Raw::connect_as_identity(addr, bob.clone());
    bob_raw.sign_in("bob");
    let got = fetch(&mut bob_raw, MailFetch::sign(bob.signing_key(), now()));
    assert_eq!(got, ids);
    bob_raw.send(Message::MailAck { ack: MailAck::sign(bob.signing_key(), got, now()) });
    std::thread::sleep(Duration::from_millis(300));
    drop(sn);
    drop(bob_raw);
    let _sn = start_sn_at(root.path(), "sn1", addr, &[]);
    let mut bob_raw = Raw::connect_as_identity(addr, bob.clone());
    bob_raw.sign_in("bob");
    assert!(fetch(&mut bob_raw, MailFetch::sign(bob.signing_key(), now())).is_empty(), "acked mail came back");
}

#[test]
fn the_claims_json_of_an_older_supernode_is_imported_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sn1");
    std::fs::create_dir_all(&dir).unwrap();
    let owner = Identity::from_seed([85; 32]);
    // Recent: a claim lives a year from its signature (older ones are dropped at import).
    let claim = NameClaim::sign(owner.signing_key(), "olga", now()).unwrap();
    std::fs::write(dir.join("claims.json"), serde_json::to_vec(&[claim]).unwrap()).unwrap();
    let sn = start_sn(root.path(), "sn1", &[]);
    let mut mallory = Raw::connect(sn.addr, 84);
    while mallory.try_recv(Duration::from_millis(200)).is_some() {}
    mallory.send(Message::Claim { claim: NameClaim::sign(mallory.id.signing_key(), "olga", now()).unwrap() });
    match mallory.recv() {
        Message::ClaimResult { result: Err(e), .. } => assert_eq!(e, supervox_proto::Refusal::Taken),
        m => panic!("the imported claim is missing: {m:?}"),
    }
    assert!(!dir.join("claims.json").exists() && dir.join("claims.json.migrated").exists());
}
