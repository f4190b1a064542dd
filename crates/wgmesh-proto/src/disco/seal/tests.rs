use super::*;

fn keys(n: u8) -> DiscoKeys {
    DiscoKeys::new(PrivateKey::from_random([n; 32]))
}

const NOW: u64 = 1_800_000_000_000;

fn ping() -> Message {
    Message::Ping {
        tx: [7; 12],
        sent_at_ms: NOW,
    }
}

#[test]
fn a_sealed_message_opens_for_its_receiver_only() {
    let (mut a, mut b, mut c) = (keys(1), keys(2), keys(3));
    let (pa, pb) = (a.public_key(), b.public_key());
    let sealed = a.seal(&pb, &ping(), [1; 24]).unwrap();
    assert!(crate::disco::is_disco(&sealed));
    let opened = b.open(NOW, &sealed, |k| *k == pa).unwrap();
    assert_eq!(
        opened,
        Opened {
            from: pa,
            message: ping()
        }
    );
    // c is not the receiver: the pair key differs.
    assert_eq!(
        c.open(NOW, &sealed, |_| true),
        Err(DiscoError::Unauthenticated)
    );
}

#[test]
fn forged_replayed_stale_and_unknown_are_refused() {
    let (mut a, mut b) = (keys(1), keys(2));
    let (pa, pb) = (a.public_key(), b.public_key());
    let sealed = a.seal(&pb, &ping(), [2; 24]).unwrap();
    // Unknown sender: refused before any crypto.
    assert_eq!(
        b.open(NOW, &sealed, |_| false),
        Err(DiscoError::UnknownSender)
    );
    // Any flipped bit: header (sender swap) or payload.
    for i in [8, 40, 60, sealed.len() - 1] {
        let mut f = sealed.clone();
        f[i] ^= 1;
        let e = b.open(NOW, &f, |_| true).unwrap_err();
        assert!(
            matches!(e, DiscoError::Unauthenticated | DiscoError::UnknownSender),
            "byte {i}: {e:?}"
        );
    }
    assert!(b.open(NOW, &sealed, |k| *k == pa).is_ok());
    assert_eq!(
        b.open(NOW + 1000, &sealed, |k| *k == pa),
        Err(DiscoError::Replayed)
    );
    // An old ping under a new nonce (a replay past the nonce memory).
    let old = Message::Ping {
        tx: [7; 12],
        sent_at_ms: NOW - MAX_SKEW_MS - 1,
    };
    let sealed = a.seal(&pb, &old, [3; 24]).unwrap();
    assert_eq!(
        b.open(NOW, &sealed, |k| *k == pa),
        Err(DiscoError::Stale {
            skew_ms: MAX_SKEW_MS + 1
        })
    );
    // Truncated and not-disco.
    assert_eq!(
        b.open(NOW, &sealed[..70], |_| true),
        Err(DiscoError::Truncated)
    );
    assert_eq!(
        b.open(NOW, &[1, 0, 0, 0], |_| true),
        Err(DiscoError::NotDisco)
    );
    // A low-order peer key gives no secret.
    let zero = PublicKey::from_bytes([0; 32]);
    assert_eq!(a.seal(&zero, &ping(), [4; 24]), Err(DiscoError::WeakKey));
}

#[test]
fn nonces_are_forgotten_after_the_window() {
    let (mut a, mut b) = (keys(1), keys(2));
    let pb = b.public_key();
    let pong = Message::Pong {
        tx: [1; 12],
        observed: "192.0.2.1:1".parse().unwrap(),
    };
    let sealed = a.seal(&pb, &pong, [5; 24]).unwrap();
    assert!(b.open(NOW, &sealed, |_| true).is_ok());
    assert_eq!(
        b.open(NOW + REPLAY_WINDOW_MS, &sealed, |_| true),
        Err(DiscoError::Replayed)
    );
    // Past the window a pong opens again: the path manager then refuses
    // its transaction id, which it accepts once.
    assert!(
        b.open(NOW + REPLAY_WINDOW_MS + 1, &sealed, |_| true)
            .is_ok()
    );
    assert_eq!(b.seen.len(), 1);
}

proptest::proptest! {
    #[test]
    fn open_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let mut b = keys(2);
        let mut d = MAGIC.to_vec();
        d.extend(bytes);
        let _ = b.open(NOW, &d, |_| true);
    }
}
