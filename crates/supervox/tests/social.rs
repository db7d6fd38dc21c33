//! The social layer with real processes: offline chat parts left in a
//! mailbox are stored in the recipient node's database before it
//! acknowledges them (issue 13; PROTOCOL.md §8, §9).

mod common;
#[path = "common/raw.rs"]
mod raw;

use common::*;
use raw::{now, Raw};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use supervox::db::{Db, DB_FILE};
use supervox_core::social::chat::{Chat, ChatOutput};
use supervox_core::Identity;
use supervox_proto::mail::{MailFetch, MailItem, MAX_MAIL_LIFETIME_MS};
use supervox_proto::Message;

#[test]
fn offline_chat_is_stored_by_the_node_filed_under_the_senders_name_then_acknowledged_and_receipted() {
    let root = tempfile::tempdir().unwrap();
    let sn = start_sn(root.path(), "sn", &[]);
    // Bob's node runs with a known identity, so alice can write to him before it starts.
    let bob_id = Identity::from_seed([7; 32]);
    let bob_dir = root.path().join("bob-data");
    std::fs::create_dir_all(&bob_dir).unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(bob_dir.join("identity"))
        .unwrap()
        .write_all(&bob_id.to_file_bytes())
        .unwrap();

    let mut alice = Raw::connect(sn.addr, 1);
    alice.sign_in("alice");
    let mut chat = Chat::new(Identity::from_seed([1; 32]), "alice", true);
    let mut rng = rand::thread_rng();
    let text = "x".repeat(9_000); // two parts
    let id = chat.send(bob_id.user_id(), &text, now(), &mut rng).unwrap();
    let mut units = Vec::new();
    while let Some(o) = chat.poll_output() {
        if let ChatOutput::Deliver { wire_id, sealed, .. } = o {
            let item = MailItem::sign(
                alice.id.signing_key(),
                wire_id,
                bob_id.user_id(),
                now(),
                MAX_MAIL_LIFETIME_MS,
                sealed.clone(),
            );
            alice.send(Message::MailPut { item });
            units.push(wire_id);
        }
    }
    assert_eq!(units.len(), 2);
    for _ in 0..2 {
        match alice.recv() {
            Message::MailPutResult { result: Ok(()), id } => chat.stored(&id),
            m => panic!("{m:?}"),
        }
    }

    let bob = start_node_in(root.path(), "bob", &bob_dir, &[sn.addr], &[]);
    wait_signed_in(&bob, Duration::from_secs(10));
    // Opened, joined and filed under alice's name (the directory gives her key that name).
    let got = wait_for(Duration::from_secs(10), "bob has alice's message", || {
        let (_, lines) = ctl_json(&bob, &["messages", "alice", "--json"]);
        lines.into_iter().find(|m| m["id"] == hex::encode(id))
    });
    assert_eq!(got["text"], text.as_str());
    assert_eq!((got["from"].as_str(), got["direction"].as_str()), (Some("alice"), Some("in")));
    drop(bob);
    // The database holds the text, and no raw unit is left once it was taken.
    let db = Db::open(&bob_dir.join(DB_FILE)).unwrap();
    assert!(db.inbox_units().unwrap().is_empty());
    assert!(db.messages().unwrap().iter().any(|m| m.id == id && m.text == text));
    // Bob's receipt went back to alice: online (she is signed in) as a peer message.
    let receipt = loop {
        match alice.recv() {
            Message::Signal(env) if matches!(env.body, supervox_proto::CallSignal::Peer(_)) => break env,
            _ => continue,
        }
    };
    let supervox_proto::CallSignal::Peer(body) = receipt.body else { unreachable!() };
    chat.receive(receipt.from, &receipt.call_id.0, &body, &mut rng).unwrap();
    assert!(std::iter::from_fn(|| chat.poll_output()).any(|o| matches!(o, ChatOutput::Status { id: i, .. } if i == id)));

    // The node acknowledged them: a fetch as bob now finds the mailbox empty.
    let mut raw_bob = Raw::connect(sn.addr, 7);
    raw_bob.sign_in("bob");
    raw_bob.send(Message::MailFetch { fetch: MailFetch::sign(bob_id.signing_key(), now()) });
    loop {
        match raw_bob.recv() {
            Message::Mail { items, done, .. } => {
                assert!(items.is_empty(), "acknowledged mail came back: {items:?}");
                if done {
                    break;
                }
            }
            _ => continue,
        }
    }
}
