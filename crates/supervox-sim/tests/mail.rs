//! Offline mail and peer messages in the simulator (`--mail`), at a scale
//! CI runs in seconds: nothing lost, delivered within 60 s of the sign-in,
//! presence-path peer messages well within 2 s.

use supervox_sim::{MailConfig, Report, Scenario, Sim, SimConfig};

fn run(cfg: SimConfig) -> Report {
    Sim::new(cfg).expect("valid config").run()
}

/// 10 supernodes, 200 clients; a fifth of them sign out after the warm-up
/// and back in after the 30 % crash, while the others write to them.
fn crash_with_mail(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(Scenario::MassCrash, 10, 200, seed);
    let mut m = MailConfig::new(200);
    m.rate = 2.0;
    m.peer_rate = 2.0;
    m.away_share = 0.2;
    cfg.mail = Some(m);
    cfg
}

#[test]
fn mail_across_the_mass_crash_is_all_delivered_within_a_minute_of_sign_in_and_none_lost() {
    let r = run(crash_with_mail(3));
    let m = r.mail.as_ref().expect("mail figures");
    // Mail was left before the crash (its holders among the victims) and after.
    assert!(m.left >= 200 && m.judged == m.left, "{}", r.table());
    assert_eq!(m.stored, m.left, "every sender heard `stored` in the end\n{}", r.table());
    assert_eq!(m.lost, 0, "{}", r.table());
    assert_eq!(m.delivered, m.left, "{}", r.table());
    assert_eq!(m.delivered_60s_share, Some(1.0), "{}", r.table());
    assert!(m.delivery_p99_ms.is_some_and(|p| p <= 60_000.0), "{}", r.table());
    assert_eq!(m.duplicates, 0, "{}", r.table());
    assert!(m.peer_success.is_some_and(|s| s >= 0.99), "{}", r.table());
    assert!(m.peer_p99_ms.is_some_and(|p| p <= 2_000.0), "{}", r.table());
    assert!(m.mail_overlay_bytes_per_sn_s > 0.0 && m.peer_overlay_bytes_per_sn_s > 0.0, "{}", r.table());
    // The away wave does not count against the crash's recovery.
    assert!(r.summary.recovered_99_s.is_some_and(|s| s <= 10.0), "{}", r.table());
    assert_eq!(r.summary.names_lost, 0);
}

#[test]
fn mail_with_churn_is_delivered_and_the_json_carries_it_only_when_asked() {
    let mut cfg = SimConfig::new(Scenario::Steady, 5, 80, 7);
    cfg.warmup_ms = 30_000;
    cfg.duration_ms = 300_000;
    let plain = run(cfg.clone());
    let mut m = MailConfig::new(80);
    m.rate = 1.0;
    m.peer_rate = 1.0;
    cfg.mail = Some(m);
    let a = run(cfg.clone());
    let b = run(cfg);
    assert_eq!(a.to_json(), b.to_json(), "the same seed gives the same figures");
    let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    assert!(v.get("mail").is_some_and(|m| m.get("lost").is_some()));
    let p: serde_json::Value = serde_json::from_str(&plain.to_json()).unwrap();
    assert!(p.get("mail").is_none(), "the contract keys stay as they were without --mail");
    let m = a.mail.as_ref().unwrap();
    // Churn: clients sign out and in on their own (median 3 min away).
    assert!(m.left >= 50 && m.judged >= 20, "{}", a.table());
    assert_eq!(m.lost, 0, "{}", a.table());
    assert_eq!(m.delivered_60s_share, Some(1.0), "{}", a.table());
    assert!(m.peer_success.is_some_and(|s| s >= 0.99), "{}", a.table());
}

#[test]
fn bad_mail_settings_are_refused() {
    let mut cfg = crash_with_mail(1);
    cfg.mail.as_mut().unwrap().away_share = 1.5;
    assert!(Sim::new(cfg).is_err());
    let mut cfg = crash_with_mail(1);
    cfg.mail.as_mut().unwrap().rate = f64::NAN;
    assert!(Sim::new(cfg).is_err());
    let mut cfg = crash_with_mail(1);
    cfg.mail.as_mut().unwrap().reput_ms = Some(0);
    assert!(Sim::new(cfg).is_err());
}
