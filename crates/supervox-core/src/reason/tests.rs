use super::*;
use std::collections::HashSet;

/// One value of every `CallEnd` variant. The match has no wildcard, so a new
/// variant does not compile until it is listed here too.
fn all_ends() -> Vec<CallEnd> {
    let all = vec![
        CallEnd::LocalHangup,
        CallEnd::remote_hangup("bye"),
        CallEnd::DurationReached,
        CallEnd::MediaTimeout,
        CallEnd::ControlClientLeft,
        CallEnd::ShuttingDown,
        CallEnd::AudioDevice("no device".into()),
    ];
    for e in &all {
        match e {
            CallEnd::LocalHangup
            | CallEnd::RemoteHangup(_)
            | CallEnd::DurationReached
            | CallEnd::MediaTimeout
            | CallEnd::ControlClientLeft
            | CallEnd::ShuttingDown
            | CallEnd::AudioDevice(_) => {}
        }
    }
    all
}

/// One value of every `CallFailure` variant (and every `Rejection`), bar
/// `Ended`, which carries a `CallEnd`'s code.
fn all_own_failures() -> Vec<CallFailure> {
    let all = vec![
        CallFailure::InvalidName(ReasonText::new("invalid name \"X\"")),
        CallFailure::CallingSelf,
        CallFailure::NotSignedIn,
        CallFailure::AlreadyInCall,
        CallFailure::BadRequest("bad --input: x".into()),
        CallFailure::LookupTimedOut,
        CallFailure::NoSuchUser("nobody".into()),
        CallFailure::Offline("carol".into()),
        CallFailure::LookupUnverified,
        CallFailure::Handshake(CallCryptoError::IdentityMismatch),
        CallFailure::CalleeDidNotRespond,
        CallFailure::NoAnswer,
        CallFailure::Missed,
        CallFailure::Rejected(Rejection::Busy),
        CallFailure::Rejected(Rejection::Declined),
        CallFailure::Rejected(Rejection::NoAnswer),
        CallFailure::Rejected(Rejection::HandshakeFailed),
        CallFailure::Rejected(Rejection::CallerNotVerified),
        CallFailure::Rejected(Rejection::from_wire("on holiday")),
        CallFailure::CallerCancelled,
        CallFailure::CallerNameMismatch("alice".into()),
        CallFailure::KeyChanged("bob".into()),
        CallFailure::LookupMismatch("bob".into()),
        CallFailure::LookupUnconfirmed("bob".into()),
        CallFailure::NoMediaPath,
        CallFailure::LostSupernode,
        CallFailure::Redirected,
        CallFailure::signal_failed("callee is not connected to its supernode"),
    ];
    for f in &all {
        match f {
            CallFailure::InvalidName(_)
            | CallFailure::CallingSelf
            | CallFailure::NotSignedIn
            | CallFailure::AlreadyInCall
            | CallFailure::BadRequest(_)
            | CallFailure::LookupTimedOut
            | CallFailure::NoSuchUser(_)
            | CallFailure::Offline(_)
            | CallFailure::LookupUnverified
            | CallFailure::Handshake(_)
            | CallFailure::CalleeDidNotRespond
            | CallFailure::NoAnswer
            | CallFailure::Missed
            | CallFailure::CallerCancelled
            | CallFailure::CallerNameMismatch(_)
            | CallFailure::KeyChanged(_)
            | CallFailure::LookupMismatch(_)
            | CallFailure::LookupUnconfirmed(_)
            | CallFailure::NoMediaPath
            | CallFailure::LostSupernode
            | CallFailure::Redirected
            | CallFailure::SignalFailed(_)
            | CallFailure::Ended(_) => {}
            CallFailure::Rejected(r) => match r {
                Rejection::Busy
                | Rejection::Declined
                | Rejection::NoAnswer
                | Rejection::HandshakeFailed
                | Rejection::CallerNotVerified
                | Rejection::Other(_) => {}
            },
        }
    }
    all
}

fn is_kebab(code: &str) -> bool {
    !code.is_empty()
        && !code.starts_with('-')
        && !code.ends_with('-')
        && !code.contains("--")
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn assert_distinct_kebab(codes: &[&'static str]) {
    let mut seen = HashSet::new();
    for c in codes {
        assert!(is_kebab(c), "{c:?} is not kebab-case");
        assert!(seen.insert(*c), "code {c:?} used twice");
    }
}

#[test]
fn kebab_check_refuses_what_it_should() {
    for bad in ["", "Local-hangup", "local_hangup", "local hangup", "-x", "x-", "a--b"] {
        assert!(!is_kebab(bad), "{bad:?}");
    }
    assert!(is_kebab("audio-device-error"));
}

#[test]
fn every_call_end_has_its_own_kebab_code() {
    let codes: Vec<_> = all_ends().iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), 7);
    assert_distinct_kebab(&codes);
}

#[test]
fn every_call_failure_has_its_own_kebab_code_apart_from_the_ends() {
    // A failure's own codes never collide with an end's: `Ended(e)` carries e's code.
    let mut codes: Vec<_> = all_own_failures().iter().map(|f| f.code()).collect();
    codes.extend(all_ends().iter().map(|e| e.code()));
    assert_distinct_kebab(&codes);
    for e in all_ends() {
        assert_eq!(CallFailure::Ended(e.clone()).code(), e.code());
        assert_eq!(CallFailure::Ended(e.clone()).to_string(), e.to_string());
    }
}

#[test]
fn other_reasons_have_distinct_kebab_codes() {
    assert_distinct_kebab(&[PathChange::Failover.code(), PathChange::Upgrade.code()]);
    assert_distinct_kebab(&[
        LinkClose::Closed("reset".into()).code(),
        LinkClose::Redirected(ReasonText::new("x")).code(),
    ]);
    assert_distinct_kebab(&[
        SignInRefusal::Supernode(supervox_proto::Refusal::Taken).code(),
        SignInRefusal::InvalidClaim("bad".into()).code(),
    ]);
}

#[test]
fn codes_are_stable() {
    // Scripts match on these: a change here is a change of the public interface.
    assert_eq!(CallEnd::LocalHangup.code(), "local-hangup");
    assert_eq!(CallEnd::remote_hangup("anything").code(), "remote-hangup");
    assert_eq!(CallEnd::DurationReached.code(), "duration-reached");
    assert_eq!(CallEnd::MediaTimeout.code(), "media-timeout");
    assert_eq!(CallFailure::NoSuchUser("x".into()).code(), "no-such-user");
    assert_eq!(CallFailure::Offline("x".into()).code(), "offline");
    assert_eq!(CallFailure::Rejected(Rejection::Busy).code(), "busy");
    assert_eq!(CallFailure::Rejected(Rejection::Declined).code(), "declined");
    assert_eq!(CallFailure::Rejected(Rejection::CallerNotVerified).code(), "caller-not-verified");
    assert_eq!(CallFailure::CallerNameMismatch("x".into()).code(), "caller-name-mismatch");
    assert_eq!(PathChange::Failover.code(), "failover");
}

#[test]
fn only_hangups_and_the_duration_are_normal() {
    let normal: Vec<_> = all_ends().into_iter().filter(|e| e.is_normal()).map(|e| e.code()).collect();
    assert_eq!(normal, NORMAL_END_CODES);
    assert!(!CallEnd::MediaTimeout.is_normal());
    assert!(!CallEnd::AudioDevice("x".into()).is_normal());
    // A peer's Bye is normal whatever its (untrusted) text says.
    assert!(CallEnd::remote_hangup("media timeout: no packets from the peer").is_normal());
}

#[test]
fn a_failure_is_never_normal() {
    for f in all_own_failures() {
        assert!(!f.is_normal(), "{f:?}");
    }
    // Not even a hangup before the call connected.
    for e in all_ends() {
        assert!(!CallFailure::Ended(e).is_normal());
    }
}

#[test]
fn texts_read_as_before() {
    assert_eq!(CallEnd::LocalHangup.to_string(), "local hangup");
    assert_eq!(CallEnd::remote_hangup("local hangup").to_string(), "remote hangup (local hangup)");
    assert_eq!(CallEnd::DurationReached.to_string(), "call duration reached");
    assert_eq!(CallEnd::ControlClientLeft.to_string(), "local hangup (control client left)");
    assert_eq!(CallEnd::AudioDevice("no mic".into()).to_string(), "audio device error: no mic");
    assert_eq!(CallFailure::NoSuchUser("nobody".into()).to_string(), "no user named \"nobody\"");
    assert_eq!(CallFailure::Offline("carol".into()).to_string(), "carol is offline");
    assert_eq!(CallFailure::Rejected(Rejection::Busy).to_string(), "rejected: busy");
    assert_eq!(CallFailure::Rejected(Rejection::from_wire("gone")).to_string(), "rejected: gone");
    assert_eq!(CallFailure::Missed.to_string(), "missed call");
    assert_eq!(PathChange::Upgrade.to_string(), "upgrade: a better path answers");
    assert_eq!(LinkClose::Redirected(ReasonText::new("full")).to_string(), "redirected: full");
}

#[test]
fn rejections_round_trip_through_the_wire_text() {
    for r in [
        Rejection::Busy,
        Rejection::Declined,
        Rejection::NoAnswer,
        Rejection::HandshakeFailed,
        Rejection::CallerNotVerified,
    ] {
        assert_eq!(Rejection::from_wire(r.wire()), r);
    }
    assert!(matches!(Rejection::from_wire("Busy"), Rejection::Other(_)));
}

#[test]
fn hostile_reason_text_is_sanitised_and_cut() {
    // Control characters could forge log lines; bidi overrides reverse them.
    let t = ReasonText::new("ok\n2026-01-01 INFO call ended\r\x1b[31m\u{202e}evil\u{2066}");
    assert!(!t.as_str().chars().any(|c| c.is_control()), "{t:?}");
    assert!(!t.as_str().contains('\u{202e}') && !t.as_str().contains('\u{2066}'));
    assert!(t.as_str().starts_with("ok 2026"));
    // A 60 KB reason (a frame can carry that much) is cut.
    let long = ReasonText::new(&"é".repeat(60_000));
    assert_eq!(long.as_str().chars().count(), MAX_REASON_CHARS + 1);
    assert!(long.as_str().ends_with('…'));
    let exact = ReasonText::new(&"a".repeat(MAX_REASON_CHARS));
    assert_eq!(exact.as_str(), "a".repeat(MAX_REASON_CHARS));
    // The wrappers sanitise what they are given.
    let end = CallEnd::remote_hangup("a\nb");
    assert_eq!(end.to_string(), "remote hangup (a b)");
    let failed = CallFailure::signal_failed(&"x\u{0}".repeat(1000));
    assert!(failed.to_string().chars().count() <= MAX_REASON_CHARS + 1);
    assert!(!failed.to_string().contains('\u{0}'));
    let other = CallFailure::Rejected(Rejection::from_wire("no\u{85}pe"));
    assert_eq!(other.to_string(), "rejected: no pe");
}
