//! A rotation between `poll_persist` and `handle_persisted`: the batch written for the old
//! context must not raise the new context's mark, or the edge would use sequence numbers under
//! the new key that no durable row covers, and repeat them (same key, same nonce) after a crash.

use super::*;

const ROTATED: [u8; 16] = [0x3c; 16];
const OLD_FP: [u8; 8] = [0; 8];
const NEW_FP: [u8; 8] = [0x3c; 8];

/// The Partial IVs of the edge's protected requests among `out`.
fn request_pivs(out: &[(SocketAddr, Vec<u8>)]) -> Vec<u64> {
    out.iter()
        .filter_map(|(_, bytes)| Packet::from_bytes(bytes).ok())
        .filter(|p| matches!(p.header.code, MessageClass::Request(_)))
        .filter_map(|p| oscore::OscoreOption::from_packet(&p).ok()?.partial_iv)
        .collect()
}

#[test]
fn a_batch_for_a_rotated_context_does_not_raise_the_new_contexts_mark() {
    let now = Instant::now();
    let mut g = gateway();
    let mut dev = registered(&mut g, now);

    // A report: its answer waits for a batch, which is taken for writing ...
    let _ = stored_report(&mut g, &mut dev, now, 60);
    let stale = g.poll_persist().expect("a batch for the old context");
    assert!(
        stale
            .rows
            .iter()
            .all(|r| r.kid == [1] && r.state.fingerprint == OLD_FP),
        "{stale:?}"
    );
    let old_mark = stale.rows[0].state.sender_mark;
    assert!(old_mark > 0);

    // ... the secret is rotated meanwhile (the registry's reload: new secret, new
    // fingerprint, no state stored for it) ...
    let mut rotated = keys("dev-1", &[1], DeviceState::Active, StoredState::default());
    rotated.master_secret = MasterSecret::new(ROTATED.to_vec());
    rotated.stored.fingerprint = NEW_FP;
    g.handle_devices(T0, vec![rotated]);

    // ... and only then is the old batch reported written.
    g.handle_persisted(now, stale.id, true);
    let _ = sent(&mut g);

    // Every protected request sent must be below what is durable for its key: rows with the
    // new fingerprint, as the registry keeps them.
    let checked = |g: &mut Gateway, durable_new: u64| -> Vec<Packet> {
        let out = sent(g);
        for piv in request_pivs(&out) {
            assert!(
                piv < durable_new,
                "Partial IV {piv} sent under the new key with only {durable_new} durable for it \
                 (the old context's mark was {old_mark})"
            );
        }
        out.iter()
            .filter_map(|(_, b)| Packet::from_bytes(b).ok())
            .filter(|p| matches!(p.header.code, MessageClass::Request(_)))
            .collect()
    };
    // A command for the device: with nothing durable for the new key, nothing may go out.
    g.handle_command(now, T0 + 1000, valve_command("dev-1", "r1"));
    journal_durable(&mut g, now, T0 + 1000);
    assert!(checked(&mut g, 0).is_empty());
    // The new context's own batch comes next and carries the new fingerprint.
    let fresh = g.poll_persist().expect("a batch for the new context");
    let row = fresh
        .rows
        .iter()
        .find(|r| r.kid == [1])
        .expect("a row for kid 01");
    assert_eq!(row.state.fingerprint, NEW_FP);
    assert!(row.state.sender_mark > 0);
    let durable_new = row.state.sender_mark;
    g.handle_persisted(now, fresh.id, true);
    // The command's retransmission now goes, under the new key, below the new durable mark,
    // and the device with the rotated secret reads it.
    g.handle_timeout(now + Duration::from_secs(10), T0 + 11_000);
    let requests = checked(&mut g, durable_new);
    assert_eq!(requests.len(), 1, "the command, once");
    let option = oscore::OscoreOption::from_packet(&requests[0]).unwrap();
    assert_eq!(option.partial_iv, Some(0), "the new context's first IV");
    let mut dev2 = device(&[1], &ROTATED);
    let (inner, _) = oscore::unprotect_request(&mut dev2, &requests[0]).unwrap();
    assert_eq!(inner.payload, b"open");
}
