//! Byzantine supernodes in real processes: daemons run with the core's test
//! tool (`supervox supernode --byzantine`: forged lookup answers, lying
//! claims, censorship, false accusations, hijack claims, colluding on one
//! accomplice key) among honest ones. Honest clients keep calling each other
//! and keep their names, and honest members stay in each other's views.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn two_colluding_byzantine_supernodes_among_five_forge_no_call_steal_no_name_and_evict_nobody() {
    let root = tempfile::tempdir().unwrap();
    let (m1, m2, m3, m4) = (free_addr(), free_addr(), free_addr(), free_addr());
    let sn1 = start_sn_with(root.path(), "sn1", free_addr(), &[], &["--metrics", &m1.to_string()]);
    let sn2 = start_sn_with(root.path(), "sn2", free_addr(), &[sn1.addr], &["--metrics", &m2.to_string()]);
    let sn3 = start_sn_with(root.path(), "sn3", free_addr(), &[sn1.addr], &["--metrics", &m3.to_string()]);
    let evil4 =
        start_sn_with(root.path(), "evil4", free_addr(), &[sn1.addr], &["--byzantine", "--metrics", &m4.to_string()]);
    let _evil5 = start_sn_with(root.path(), "evil5", free_addr(), &[sn1.addr], &["--byzantine"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while [m1, m2, m3].iter().any(|m| metric_opt(*m, "supernode_peers").unwrap_or(0) < 4) {
        assert!(Instant::now() < deadline, "the five supernodes did not link");
        std::thread::sleep(Duration::from_millis(100));
    }
    let alice = start_node(root.path(), "alice", &[sn2.addr], &[]);
    let bob = start_node(root.path(), "bob", &[sn3.addr], &["--auto-answer"]);
    wait_signed_in(&alice, Duration::from_secs(15));
    wait_signed_in(&bob, Duration::from_secs(15));

    // Claims went to every holder, liars included; lookups to a majority of
    // them, liars maybe among them: the call still goes to bob's key.
    let (ok, events) = call(&alice, "bob", &["--duration", "2", "--input", "tone:440", "--output", "null"]);
    assert!(ok, "{events:?}\n{}\n{}", node_log(root.path(), "alice"), node_log(root.path(), "bob"));
    let up = event(&events, "call_connected").unwrap_or_else(|| panic!("{events:?}"));
    let bob_id = status(&bob).unwrap()["user_id"].as_str().unwrap().to_string();
    assert_eq!(up["user_id"].as_str(), Some(bob_id.as_str()), "{up}");
    assert!(metric(m4, "byzantine_lied_claims_total") > 0, "the liars were asked");

    // Someone else claiming alice's name through a liar is refused by the honest holders.
    let mut mallory = start_node_in(root.path(), "alice", &root.path().join("mallory"), &[evil4.addr], &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let st = loop {
        if let Some(st) = mallory.proc.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "mallory's claim was not refused");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!st.success());

    // Meanwhile the liars accuse members in every ping: nobody honest leaves sn1's view.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for m in [m1, m2, m3] {
            assert!(metric(m, "supernode_peers") >= 4, "an honest member was evicted");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(m4, "byzantine_accusations_total") > 0);
    drop((sn2, sn3));
}
