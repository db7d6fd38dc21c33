//! Reproducibility and small-scale sanity of the three scenarios.

use supervox_sim::{CrashMode, Report, Scenario, Sim, SimConfig};

fn small(scenario: Scenario, supernodes: usize, clients: usize, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(scenario, supernodes, clients, seed);
    cfg.warmup_ms = 30_000;
    cfg.duration_ms = match scenario {
        Scenario::Steady => 240_000,
        Scenario::MassCrash => 30_000 + 60_000 + 90_000,
        // The wave alone is 10 minutes.
        Scenario::FlashCrowd => 30_000 + 60_000 + 600_000 + 150_000,
    };
    cfg
}

fn run(cfg: SimConfig) -> Report {
    Sim::new(cfg).expect("valid config").run()
}

#[test]
fn same_seed_same_table_different_seed_different_table() {
    let a = run(small(Scenario::Steady, 5, 50, 42));
    let b = run(small(Scenario::Steady, 5, 50, 42));
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.events, b.events);
    assert_eq!(a.details.rows, b.details.rows);
    let c = run(small(Scenario::Steady, 5, 50, 43));
    assert_ne!(a.to_json(), c.to_json());
}

#[test]
fn json_has_exactly_the_contract_keys() {
    let r = run(small(Scenario::MassCrash, 5, 40, 1));
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "lookup_success",
        "lookup_hops_median",
        "lookup_p50_ms",
        "lookup_p99_ms",
        "max_load_ratio",
        "overlay_bytes_per_sn_s",
        "recovered_99_s",
        "names_lost",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys_sorted, want);
}

#[test]
fn steady_small_network_finds_everyone() {
    let r = run(small(Scenario::Steady, 5, 50, 7));
    let s = &r.summary;
    assert_eq!(s.lookup_success, Some(1.0), "{}", r.table());
    // With 5 supernodes and R = 3 the client's own supernode often holds
    // the record (0 hops); otherwise a holder is one hop away, never more.
    assert!(s.lookup_hops_median.is_some_and(|h| h <= 1.0), "{}", r.table());
    assert!(r.max_hops <= 1, "a lookup took {} overlay hops\n{}", r.max_hops, r.table());
    let p50 = s.lookup_p50_ms.unwrap();
    assert!(p50 >= 40.0 && p50 <= s.lookup_p99_ms.unwrap(), "{}", r.table());
    assert!(s.max_load_ratio > 0.0 && s.max_load_ratio <= 1.0);
    assert!(s.overlay_bytes_per_sn_s > 0.0);
    assert_eq!(s.recovered_99_s, None);
    assert_eq!(s.names_lost, 0);
    assert_eq!(r.callable_end, r.running_end, "{}", r.table());
}

#[test]
fn mass_crash_every_client_recovers() {
    for mode in [CrashMode::Process, CrashMode::Silent] {
        let mut cfg = small(Scenario::MassCrash, 10, 200, 3);
        cfg.crash_mode = mode;
        let r = run(cfg);
        let s = &r.summary;
        let rec = s.recovered_99_s.unwrap_or_else(|| panic!("never recovered ({mode:?})\n{}", r.table()));
        // A reset is noticed in one delay, a silent host only by keepalive.
        let bound = if mode == CrashMode::Process { 10.0 } else { 90.0 };
        assert!(rec <= bound, "{mode:?}: {rec} s\n{}", r.table());
        assert_eq!(r.callable_end, 200, "{}", r.table());
        assert!(s.max_load_ratio <= 1.0);
        assert_eq!(s.names_lost, 0, "{}", r.table());
        assert!(s.lookup_success.unwrap() > 0.9, "{}", r.table());
    }
}

#[test]
fn flash_crowd_everyone_signs_in_again() {
    let r = run(small(Scenario::FlashCrowd, 5, 60, 5));
    let s = &r.summary;
    assert!(s.recovered_99_s.is_some_and(|t| t < 30.0), "{}", r.table());
    assert_eq!(r.callable_end, 60, "{}", r.table());
    assert_eq!(s.names_lost, 0);
    assert_eq!(s.lookup_success, Some(1.0), "{}", r.table());
}

#[test]
fn bad_configurations_are_refused() {
    assert!(Sim::new(SimConfig::new(Scenario::Steady, 0, 10, 1)).is_err());
    assert!(Sim::new(SimConfig::new(Scenario::Steady, 3, 1, 1)).is_err());
    let mut cfg = SimConfig::new(Scenario::MassCrash, 3, 10, 1);
    cfg.duration_ms = cfg.warmup_ms + 20_000;
    assert!(Sim::new(cfg).is_err(), "the run must reach the crash");
    let mut cfg = SimConfig::new(Scenario::Steady, 3, 10, 1);
    cfg.loss = 1.5;
    assert!(Sim::new(cfg).is_err());
    let mut cfg = SimConfig::new(Scenario::Steady, 3, 10, 1);
    cfg.byzantine = 0.6;
    assert!(Sim::new(cfg).is_err(), "a Byzantine majority is refused");
}

#[test]
fn one_supernode_answers_locally_with_zero_hops() {
    let mut cfg = small(Scenario::Steady, 1, 30, 9);
    cfg.churn_speedup = 0.0;
    let r = run(cfg);
    let s = &r.summary;
    assert_eq!(s.lookup_success, Some(1.0), "{}", r.table());
    assert_eq!(s.lookup_hops_median, Some(0.0));
    assert_eq!(s.overlay_bytes_per_sn_s, 0.0, "no peer, no overlay traffic");
}

#[test]
fn loss_delays_but_does_not_fail_lookups() {
    let mut clean = small(Scenario::Steady, 5, 50, 11);
    clean.churn_speedup = 0.0;
    let mut lossy = clean.clone();
    lossy.loss = 0.1;
    let (a, b) = (run(clean), run(lossy));
    // Overlay datagrams are lost for real (10 %, far above a real network):
    // hedged lookups and retried stores keep nearly all lookups working.
    assert_eq!(a.summary.lookup_success, Some(1.0), "{}", a.table());
    assert!(b.summary.lookup_success.is_some_and(|s| s >= 0.99), "{}", b.table());
    assert!(b.summary.lookup_p99_ms > a.summary.lookup_p99_ms, "{}\n{}", a.table(), b.table());
}

/// A tenth of the supernodes Byzantine, every attack on (forged lookup
/// answers, lying claims, censorship, false accusations, hijack claims):
/// they do lie, and honest clients get no forged answer, lose no name, and
/// honest members stay in each other's views.
#[test]
fn a_tenth_of_the_supernodes_byzantine_forge_hijack_and_evict_nothing() {
    let mut cfg = small(Scenario::Steady, 30, 300, 5);
    cfg.churn_speedup = 0.0;
    cfg.duration_ms = 150_000;
    cfg.byzantine = 0.1;
    let r = run(cfg);
    let b = r.byzantine.clone().expect("a byzantine summary");
    assert_eq!(b.members, 3, "{}", r.table());
    assert!(b.forged_lookups > 0 && b.lied_claims > 0 && b.accusations > 0 && b.hijack_claims > 0, "{b:?}");
    assert_eq!((b.forged_accepted, b.names_hijacked), (0, 0), "{}", r.table());
    assert!(r.summary.lookup_success.is_some_and(|s| s >= 0.99), "{}", r.table());
    assert!(b.view_pairs_checked > 10_000, "{b:?}");
    assert!(b.longest_missing_s <= 2.0, "{}", r.table());
    // The JSON carries it; a run without --byzantine has none.
    assert!(r.to_json().contains("\"byzantine\":{"));
    assert!(run(small(Scenario::Steady, 5, 50, 5)).byzantine.is_none());
}
