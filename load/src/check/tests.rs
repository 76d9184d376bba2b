//! The checker against a small consistent world (a history and the rows it left), then that
//! world doctored one fault at a time: each test asserts the fault's own kind is reported, so
//! a checker that could not see it fails.

use serde_json::{Value, json};

use super::*;

const SECRET: &str = "test-secret";
const EVENT: &str = "01900000-0000-7000-8000-0000000000e1";
const T1: &str = "01900000-0000-7000-8000-0000000000a1";
const T2: &str = "01900000-0000-7000-8000-0000000000a2";
const QUOTA: &str = "01900000-0000-7000-8000-0000000000c1";
const A1: &str = "00000000-0000-4000-8000-000000000001";
const A2: &str = "00000000-0000-4000-8000-000000000002";
const A3: &str = "00000000-0000-4000-8000-000000000003";
const A4: &str = "00000000-0000-4000-8000-000000000004";
const R1: &str = "00000000-0000-4000-8000-0000000000f1";
const AD1: &str = "00000000-0000-4000-8000-0000000000d1";

fn attempt(call: u64, n: u32, method: &str, path: &str) -> Attempt {
    Attempt {
        call,
        attempt: n,
        start_us: 1_000 * call + u64::from(n),
        end_us: 1_000 * call + u64::from(n) + 1,
        method: method.to_owned(),
        instance: "http://127.0.0.1:8080".to_owned(),
        path: path.to_owned(),
        key: None,
        fingerprint: None,
        body: None,
        status: None,
        answer: None,
        error: None,
    }
}

fn answered(mut a: Attempt, status: u16, answer: Value) -> Attempt {
    a.status = Some(status);
    a.answer = Some(answer);
    a
}

fn timed_out(mut a: Attempt) -> Attempt {
    a.error = Some("timeout".to_owned());
    a
}

fn keyed(mut a: Attempt, key: &str, fingerprint: &str) -> Attempt {
    a.key = Some(key.to_owned());
    a.fingerprint = Some(fingerprint.to_owned());
    a
}

/// A hold attempt of `buyer` asking for `quantity` of `ticket_type`.
fn hold(call: u64, n: u32, buyer: &str, ticket_type: &str, quantity: i64) -> Attempt {
    let mut a = keyed(
        attempt(call, n, "POST", &format!("/events/{EVENT}/tickets")),
        &format!("hold-{call}"),
        buyer,
    );
    a.body = Some(json!({ "quantity": quantity, "ticketTypeId": ticket_type }));
    a
}

fn hold_answer(id: &str, ticket_type: &str, quantity: i64, price: i64) -> Value {
    json!({
        "id": id, "eventId": EVENT, "quantity": quantity, "status": "reserved",
        "lines": [{"ticketTypeId": ticket_type, "quantity": quantity, "unitPrice": price,
                   "amount": quantity * price, "refundedQuantity": 0}],
        "total": quantity * price,
    })
}

fn pay(call: u64, allocation: &str, buyer: &str) -> Attempt {
    keyed(
        attempt(call, 1, "POST", &format!("/tickets/{allocation}/payment")),
        &format!("pay-{call}"),
        buyer,
    )
}

fn checkin(call: u64, nonce: &str, admission: &str) -> Attempt {
    let mut a = attempt(call, 1, "POST", &format!("/events/{EVENT}/checkins"));
    a.body = Some(json!({ "code": "AQ…", "nonce": nonce }));
    answered(
        a,
        200,
        json!({"result": "admitted", "admission": {"id": admission, "status": "checked_in"}}),
    )
}

/// Holds, payments, a cancel, a hold retried after a time-out, a refund, a check-in, an
/// ambiguous hold that took effect, one that did not, a declined card and a read.
fn history() -> Vec<Attempt> {
    let mut refund = attempt(7, 1, "POST", &format!("/tickets/{A3}/refund"));
    refund.key = Some("refund-7".to_owned());
    refund.body = Some(json!({"lines": [{"ticketTypeId": T2, "quantity": 1}]}));
    let mut unavailable = hold(9, 1, "b4", T2, 1);
    unavailable.status = Some(503);
    unavailable.answer = Some(json!({"code": "SERVICE_UNAVAILABLE"}));
    vec![
        answered(hold(1, 1, "b1", T1, 2), 201, hold_answer(A1, T1, 2, 1000)),
        answered(
            pay(2, A1, "b1"),
            200,
            json!({"id": A1, "status": "purchased"}),
        ),
        answered(hold(3, 1, "b2", T2, 1), 201, hold_answer(A2, T2, 1, 500)),
        answered(
            keyed(
                attempt(4, 1, "DELETE", &format!("/tickets/{A2}/payment")),
                "x",
                "b2",
            ),
            200,
            json!({"id": A2, "status": "cancelled"}),
        ),
        timed_out(hold(5, 1, "b3", T2, 3)),
        answered(hold(5, 2, "b3", T2, 3), 201, hold_answer(A3, T2, 3, 500)),
        answered(
            pay(6, A3, "b3"),
            200,
            json!({"id": A3, "status": "purchased"}),
        ),
        answered(
            refund,
            200,
            json!({"id": A3, "status": "purchased", "refundedAmount": 500,
                   "refunds": [{"id": R1, "status": "completed", "amount": 500}]}),
        ),
        checkin(8, "door-1:1", AD1),
        unavailable,
        timed_out(hold(10, 1, "b5", T2, 1)),
        answered(pay(11, A4, "b4"), 402, json!({"code": "PAYMENT_DECLINED"})),
        answered(
            attempt(12, 1, "GET", &format!("/events/{EVENT}")),
            200,
            json!({"id": EVENT}),
        ),
    ]
}

fn simple(id: &str) -> String {
    id.replace('-', "")
}

fn allocation(
    id: &str,
    buyer: &str,
    status: &str,
    ticket_type: &str,
    quantity: i64,
    price: i64,
) -> AllocationRow {
    AllocationRow {
        id: id.to_owned(),
        event_id: EVENT.to_owned(),
        status: status.to_owned(),
        quantity,
        total: quantity * price,
        refunded_quantity: 0,
        refunded_amount: 0,
        waiting_list_offer: false,
        fingerprint_hash: fingerprint_hash(SECRET, buyer),
        payment_reference: None,
        expired_at: None,
        lines: vec![LineRow {
            ticket_type_id: ticket_type.to_owned(),
            quantity,
            unit_price: price,
            refunded_quantity: 0,
        }],
    }
}

fn admission(n: u8, allocation: &str, status: &str) -> AdmissionRow {
    AdmissionRow {
        id: format!("00000000-0000-4000-8000-0000000000d{n}"),
        allocation_id: allocation.to_owned(),
        status: status.to_owned(),
        checked_in: status == "checked_in",
    }
}

fn charge(allocation: &str, nonce: &str, outcome: &str, amount: Option<i64>) -> ChargeRow {
    ChargeRow {
        reference: format!("pay_{}_{nonce}", simple(allocation)),
        outcome: outcome.to_owned(),
        amount,
    }
}

/// What the history left: A1 purchased (2 × T1 at 10.00), A2 cancelled, A3 purchased (3 ×
/// T2 at 5.00) with one ticket refunded, A4 reserved (the ambiguous hold's effect).
fn snapshot() -> Snapshot {
    let mut a1 = allocation(A1, "b1", "purchased", T1, 2, 1000);
    a1.payment_reference = Some(format!("pay_{}_n1", simple(A1)));
    let mut a3 = allocation(A3, "b3", "purchased", T2, 3, 500);
    a3.payment_reference = Some(format!("pay_{}_n1", simple(A3)));
    a3.refunded_quantity = 1;
    a3.refunded_amount = 500;
    a3.lines[0].refunded_quantity = 1;
    let mut a4 = allocation(A4, "b4", "reserved", T2, 1, 500);
    a4.payment_reference = Some(format!("pay_{}_n1", simple(A4)));
    Snapshot {
        fingerprint_secret: SECRET.to_owned(),
        events: vec![EventRow {
            id: EVENT.to_owned(),
            total: 10,
            available: 5,
            reserved: 1,
            purchased: 4,
            set_aside: 0,
            waiting_list_length: 0,
        }],
        quotas: vec![QuotaRow {
            id: QUOTA.to_owned(),
            event_id: EVENT.to_owned(),
            size: 4,
            available: 2,
            reserved: 0,
            purchased: 2,
            set_aside: 0,
            ticket_type_ids: vec![T1.to_owned()],
        }],
        allocations: vec![a1, allocation(A2, "b2", "cancelled", T2, 1, 500), a3, a4],
        refunds: vec![RefundRow {
            id: R1.to_owned(),
            allocation_id: A3.to_owned(),
            status: "completed".to_owned(),
            amount: 500,
            reference: format!("{}_0123456789ab", refund_key_prefix(A3, "refund-7")),
            lines: vec![RefundLineRow {
                ticket_type_id: T2.to_owned(),
                quantity: 1,
                amount: 500,
            }],
        }],
        charges: vec![
            charge(A1, "n1", "charged", Some(2000)),
            charge(A3, "n1", "charged", Some(1500)),
            charge(A4, "n1", "declined", Some(500)),
        ],
        provider_refunds: vec![ProviderRefundRow {
            reference: "re_provider_1".to_owned(),
            charge_reference: format!("pay_{}_n1", simple(A3)),
            outcome: "refunded".to_owned(),
            amount: 500,
        }],
        admissions: vec![
            admission(1, A1, "checked_in"),
            admission(2, A1, "valid"),
            admission(3, A3, "valid"),
            admission(4, A3, "valid"),
            admission(5, A3, "revoked"),
        ],
        admitted_scans: vec![ScanRow {
            event_id: EVENT.to_owned(),
            nonce: "door-1:1".to_owned(),
            admission_id: AD1.to_owned(),
        }],
        waiting_list: Vec::new(),
    }
}

fn kinds(violations: &[Violation]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = violations.iter().map(|v| v.kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn allocation_mut<'a>(snapshot: &'a mut Snapshot, id: &str) -> &'a mut AllocationRow {
    snapshot
        .allocations
        .iter_mut()
        .find(|a| a.id == id)
        .expect("the allocation is in the snapshot")
}

/// Asserts that `kind` is reported, and only kinds in `also` besides it.
#[track_caller]
fn assert_caught(history: &[Attempt], snapshot: &Snapshot, kind: Kind, also: &[Kind]) {
    let violations = check(history, snapshot);
    let found = kinds(&violations);
    assert!(
        found.contains(&kind),
        "{kind} not reported: {violations:#?}"
    );
    for k in &found {
        assert!(
            *k == kind || also.contains(k),
            "unexpected {k} besides {kind}: {violations:#?}"
        );
    }
}

#[test]
fn the_consistent_world_is_sound() {
    let violations = check(&history(), &snapshot());
    assert_eq!(violations, Vec::new());
    let report = Report::new(&history(), &snapshot());
    assert!(report.sound);
    let s = &report.summary;
    assert_eq!(
        (
            s.calls,
            s.attempts,
            s.acknowledged_holds,
            s.acknowledged_payments
        ),
        (12, 13, 3, 2)
    );
    assert_eq!(
        (
            s.acknowledged_cancels,
            s.acknowledged_refunds,
            s.acknowledged_checkins
        ),
        (1, 1, 1)
    );
    assert_eq!(s.ambiguous_calls, 2, "the 503'd hold and the timed-out one");
    assert_eq!((s.charged, s.purchased_totals), (3500, 3500));
    assert_eq!(
        (
            s.provider_refunded,
            s.refunds_completed,
            s.allocations_refunded
        ),
        (500, 500, 500)
    );
}

#[test]
fn the_fingerprint_hash_is_hmac_sha256_of_the_client_prefix() {
    // RFC 4231 style check of the construction: HMAC-SHA256(key, "client\0" + text), hex.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
    mac.update(b"client\0device-1");
    let expected = hex(&mac.finalize().into_bytes());
    assert_eq!(fingerprint_hash("k", "device-1"), expected);
    assert_eq!(expected.len(), 64);
    assert_ne!(
        fingerprint_hash("k", "device-1"),
        fingerprint_hash("j", "device-1")
    );
}

#[test]
fn an_event_above_its_capacity_is_caught() {
    let mut history = history();
    history.push(answered(
        hold(13, 1, "b6", T2, 6),
        201,
        hold_answer("00000000-0000-4000-8000-000000000005", T2, 6, 500),
    ));
    let mut snapshot = snapshot();
    snapshot.allocations.push(allocation(
        "00000000-0000-4000-8000-000000000005",
        "b6",
        "reserved",
        T2,
        6,
        500,
    ));
    // Counters that follow the rows: only the capacity is broken.
    snapshot.events[0].reserved = 7;
    snapshot.events[0].available = -1;
    assert_caught(&history, &snapshot, Kind::OverCapacity, &[]);
    let violations = check(&history, &snapshot);
    assert!(violations[0].message.contains(EVENT), "{violations:?}");
}

#[test]
fn a_quota_above_its_capacity_is_caught() {
    let id = "00000000-0000-4000-8000-000000000005";
    let mut history = history();
    history.push(answered(
        hold(13, 1, "b6", T1, 3),
        201,
        hold_answer(id, T1, 3, 1000),
    ));
    let mut snapshot = snapshot();
    snapshot
        .allocations
        .push(allocation(id, "b6", "reserved", T1, 3, 1000));
    snapshot.events[0].reserved = 4;
    snapshot.events[0].available = 2;
    snapshot.quotas[0].reserved = 3;
    snapshot.quotas[0].available = -1;
    let violations = check(&history, &snapshot);
    assert_eq!(
        kinds(&violations),
        vec![Kind::OverCapacity],
        "{violations:#?}"
    );
    assert!(violations[0].message.contains(QUOTA), "{violations:?}");
}

#[test]
fn a_counter_that_differs_from_its_rows_is_caught() {
    let mut snapshot = snapshot();
    // Balanced, so only the rows can tell.
    snapshot.events[0].reserved = 2;
    snapshot.events[0].available = 4;
    assert_caught(&history(), &snapshot, Kind::CountsDiffer, &[]);

    let mut snapshot = self::snapshot();
    snapshot.quotas[0].purchased = 1;
    snapshot.quotas[0].available = 3;
    assert_caught(&history(), &snapshot, Kind::CountsDiffer, &[]);

    let mut snapshot = self::snapshot();
    snapshot.events[0].available = 6;
    assert_caught(
        &history(),
        &snapshot,
        Kind::CountsDiffer,
        &[Kind::CountsUnbalanced],
    );
    assert!(kinds(&check(&history(), &snapshot)).contains(&Kind::CountsUnbalanced));

    let mut snapshot = self::snapshot();
    snapshot.events[0].set_aside = 2;
    assert_caught(&history(), &snapshot, Kind::CountsDiffer, &[]);
}

#[test]
fn an_acknowledged_hold_missing_is_caught() {
    let mut snapshot = snapshot();
    snapshot.allocations.retain(|a| a.id != A2);
    // The cancel of that hold was acknowledged too: both are lost.
    assert_caught(&history(), &snapshot, Kind::LostAcknowledgement, &[]);
    let violations = check(&history(), &snapshot);
    assert!(
        violations.iter().any(|v| v.message.starts_with("call 3:")),
        "{violations:?}"
    );
}

#[test]
fn an_acknowledged_hold_with_other_lines_is_caught() {
    let mut snapshot = snapshot();
    let a2 = allocation_mut(&mut snapshot, A2);
    a2.lines[0].ticket_type_id = T1.to_owned();
    assert_caught(&history(), &snapshot, Kind::LostAcknowledgement, &[]);
}

#[test]
fn an_acknowledged_payment_whose_row_is_still_reserved_is_caught() {
    let mut snapshot = snapshot();
    allocation_mut(&mut snapshot, A1).status = "reserved".to_owned();
    // Its counters, charge and admissions follow the doctored row, but the payment's 200
    // is what must be reported.
    let violations = check(&history(), &snapshot);
    assert!(
        violations
            .iter()
            .any(|v| v.kind == Kind::LostAcknowledgement && v.message.starts_with("call 2:")),
        "{violations:#?}"
    );
}

#[test]
fn an_acknowledged_hold_expired_before_its_expires_at_is_caught() {
    // A fifth hold, answered 201 until 10:10, whose row is expired: at 10:00 it lapsed ten
    // minutes early; at 10:10:00.5 it was on time (within the clocks' tolerance).
    const A5: &str = "00000000-0000-4000-8000-000000000005";
    let mut answer = hold_answer(A5, T2, 1, 500);
    answer["expiresAt"] = json!("2026-12-02T10:10:00Z");
    let mut history = history();
    history.push(answered(hold(13, 1, "b6", T2, 1), 201, answer));
    let mut lapsed = allocation(A5, "b6", "expired", T2, 1, 500);
    lapsed.expired_at = Some("2026-12-02T10:10:00.5Z".to_owned());
    let mut snapshot = snapshot();
    snapshot.allocations.push(lapsed);
    assert_eq!(check(&history, &snapshot), Vec::new());
    allocation_mut(&mut snapshot, A5).expired_at = Some("2026-12-02T10:00:00Z".to_owned());
    assert_caught(&history, &snapshot, Kind::LostAcknowledgement, &[]);
    let violations = check(&history, &snapshot);
    assert!(
        violations.iter().any(|v| v.message.starts_with("call 13:")
            && v.message.contains("expired at 2026-12-02T10:00:00Z")),
        "{violations:#?}"
    );
}

#[test]
fn an_acknowledged_check_in_not_stored_is_caught() {
    let mut snapshot = snapshot();
    snapshot.admissions[0].status = "valid".to_owned();
    snapshot.admissions[0].checked_in = false;
    assert_caught(&history(), &snapshot, Kind::LostAcknowledgement, &[]);
}

#[test]
fn an_acknowledged_refund_not_stored_is_caught() {
    let mut snapshot = snapshot();
    snapshot.refunds[0].status = "failed".to_owned();
    // The allocation still says it was refunded: the money no longer adds up either.
    assert_caught(
        &history(),
        &snapshot,
        Kind::LostAcknowledgement,
        &[Kind::CountsDiffer, Kind::MoneyMismatch],
    );
}

#[test]
fn two_calls_admitting_one_admission_are_caught() {
    let mut history = history();
    history.push(checkin(13, "door-2:1", AD1));
    assert_caught(&history, &snapshot(), Kind::DoubleAdmission, &[]);
}

#[test]
fn a_retried_scan_with_its_nonce_is_one_admission() {
    let mut history = history();
    // Another call, the same nonce: a retry of the same scan gets the same 200.
    history.push(checkin(13, "door-1:1", AD1));
    assert_eq!(check(&history, &snapshot()), Vec::new());
}

#[test]
fn two_stored_admitted_scans_of_one_admission_are_caught() {
    let mut snapshot = snapshot();
    snapshot.admitted_scans.push(ScanRow {
        event_id: EVENT.to_owned(),
        nonce: "door-3:7".to_owned(),
        admission_id: AD1.to_owned(),
    });
    assert_caught(&history(), &snapshot, Kind::DoubleAdmission, &[]);
}

#[test]
fn a_double_refund_beyond_the_total_is_caught() {
    let mut snapshot = snapshot();
    // A second completed refund of all three tickets, on top of the first one's.
    snapshot.refunds.push(RefundRow {
        id: "00000000-0000-4000-8000-0000000000f2".to_owned(),
        allocation_id: A3.to_owned(),
        status: "completed".to_owned(),
        amount: 1500,
        reference: format!("{}_ba9876543210", refund_key_prefix(A3, "refund-7")),
        lines: vec![RefundLineRow {
            ticket_type_id: T2.to_owned(),
            quantity: 3,
            amount: 1500,
        }],
    });
    assert_caught(
        &history(),
        &snapshot,
        Kind::OverRefund,
        &[Kind::MoneyMismatch, Kind::DuplicateEffect],
    );
    // One refund call, one key: two completed refunds are also two effects of it.
    assert!(kinds(&check(&history(), &snapshot)).contains(&Kind::DuplicateEffect));
}

#[test]
fn provider_refunds_above_their_charge_are_caught() {
    let mut snapshot = snapshot();
    snapshot.provider_refunds[0].amount = 2000;
    assert_caught(
        &history(),
        &snapshot,
        Kind::OverRefund,
        &[Kind::MoneyMismatch],
    );
}

#[test]
fn a_charge_without_a_ticket_is_caught() {
    let mut snapshot = snapshot();
    // The reserved hold A4 charged: the provider took money for nothing sold.
    snapshot
        .charges
        .push(charge(A4, "n2", "charged", Some(500)));
    assert_caught(&history(), &snapshot, Kind::ChargeWithoutTicket, &[]);

    let mut snapshot = self::snapshot();
    snapshot.charges.push(ChargeRow {
        reference: format!("pay_{}_n1", "ab".repeat(16)),
        outcome: "charged".to_owned(),
        amount: Some(700),
    });
    assert_caught(&history(), &snapshot, Kind::ChargeWithoutTicket, &[]);
}

#[test]
fn a_ticket_without_its_charge_and_a_double_charge_are_caught() {
    let mut snapshot = snapshot();
    snapshot
        .charges
        .retain(|c| !c.reference.contains(&simple(A1)));
    assert_caught(&history(), &snapshot, Kind::TicketWithoutCharge, &[]);

    let mut snapshot = self::snapshot();
    snapshot
        .charges
        .push(charge(A1, "n2", "charged", Some(2000)));
    assert_caught(&history(), &snapshot, Kind::DoubleCharge, &[]);

    let mut snapshot = self::snapshot();
    snapshot.charges[0].amount = Some(1999);
    assert_caught(&history(), &snapshot, Kind::MoneyMismatch, &[]);
}

#[test]
fn an_ambiguous_call_with_two_effects_is_caught() {
    // The 503'd hold of b4 made A4; a second allocation of that buyer is a second effect.
    let mut snapshot = snapshot();
    snapshot.allocations.push(allocation(
        "00000000-0000-4000-8000-000000000006",
        "b4",
        "expired",
        T2,
        1,
        500,
    ));
    assert_caught(&history(), &snapshot, Kind::DuplicateEffect, &[]);

    // The hold retried after a time-out was acknowledged as A3; another allocation of its
    // buyer is the timed-out attempt's own effect.
    let mut snapshot = self::snapshot();
    snapshot.allocations.push(allocation(
        "00000000-0000-4000-8000-000000000007",
        "b3",
        "expired",
        T2,
        3,
        500,
    ));
    assert_caught(&history(), &snapshot, Kind::DuplicateEffect, &[]);
}

#[test]
fn an_allocation_no_call_made_is_caught() {
    let mut snapshot = snapshot();
    snapshot.allocations.push(allocation(
        "00000000-0000-4000-8000-000000000008",
        "nobody",
        "expired",
        T2,
        1,
        500,
    ));
    assert_caught(&history(), &snapshot, Kind::Phantom, &[]);
}

#[test]
fn a_waiting_list_offer_belongs_to_its_entry() {
    let id = "00000000-0000-4000-8000-000000000009";
    let mut offer = allocation(id, "joiner", "expired", T2, 1, 500);
    offer.waiting_list_offer = true;
    let mut snapshot = snapshot();
    snapshot.allocations.push(offer);
    snapshot
        .waiting_list
        .push(entry_row(WB1, "joiner", "expired"));
    snapshot.waiting_list[0].allocation_id = Some(id.to_owned());
    let mut history = history();
    history.push(join(13, "joiner", WB1));
    assert_eq!(check(&history, &snapshot), Vec::new());

    // The entry of another buyer: its join's 201 is not what is stored either.
    snapshot.waiting_list[0].fingerprint_hash = fingerprint_hash(SECRET, "someone else");
    assert_caught(
        &history,
        &snapshot,
        Kind::Phantom,
        &[Kind::LostAcknowledgement],
    );
}

const WB1: &str = "01900000-0000-7000-8000-0000000000b1";

fn entry_row(id: &str, buyer: &str, status: &str) -> WaitingEntryRow {
    WaitingEntryRow {
        id: id.to_owned(),
        event_id: EVENT.to_owned(),
        ticket_type_id: T2.to_owned(),
        fingerprint_hash: fingerprint_hash(SECRET, buyer),
        status: status.to_owned(),
        allocation_id: None,
    }
}

/// A join of `buyer` answered 201 with entry `id`.
fn join(call: u64, buyer: &str, id: &str) -> Attempt {
    let mut a = keyed(
        attempt(call, 1, "POST", &format!("/events/{EVENT}/waiting-list")),
        &format!("join-{call}"),
        buyer,
    );
    a.body = Some(json!({"quantity": 1, "ticketTypeId": T2}));
    answered(
        a,
        201,
        json!({"id": id, "eventId": EVENT, "ticketTypeId": T2, "quantity": 1,
               "status": "waiting", "position": 1}),
    )
}

fn leave(call: u64, buyer: &str, id: &str) -> Attempt {
    let mut a = attempt(call, 1, "DELETE", &format!("/waiting-list/{id}"));
    a.fingerprint = Some(buyer.to_owned());
    answered(
        a,
        200,
        json!({"id": id, "eventId": EVENT, "status": "left"}),
    )
}

#[test]
fn a_waiting_list_entry_no_join_made_is_caught() {
    let mut snapshot = snapshot();
    snapshot.waiting_list.push(entry_row(WB1, "joiner", "left"));
    assert_caught(&history(), &snapshot, Kind::Phantom, &[]);
    // A join of its buyer that timed out may have made it; one on another event did not.
    let mut history = history();
    let mut uncertain = join(13, "joiner", WB1);
    uncertain.status = None;
    uncertain.answer = None;
    history.push(timed_out(uncertain.clone()));
    assert_eq!(check(&history, &snapshot), Vec::new());
    uncertain.path = "/events/01900000-0000-7000-8000-0000000000e2/waiting-list".to_owned();
    let mut history = self::history();
    history.push(timed_out(uncertain));
    assert_caught(&history, &snapshot, Kind::Phantom, &[]);
}

#[test]
fn an_acknowledged_join_or_leave_not_stored_is_caught() {
    let mut history = history();
    history.push(join(13, "joiner", WB1));
    // The join's 201, and no entry.
    assert_caught(&history, &snapshot(), Kind::LostAcknowledgement, &[]);

    history.push(leave(14, "joiner", WB1));
    let mut snapshot = snapshot();
    snapshot.waiting_list.push(entry_row(WB1, "joiner", "left"));
    assert_eq!(check(&history, &snapshot), Vec::new());
    // The leave's 200, and the entry still waiting (its counters follow it).
    snapshot.waiting_list[0].status = "waiting".to_owned();
    snapshot.events[0].waiting_list_length = 1;
    assert_caught(&history, &snapshot, Kind::LostAcknowledgement, &[]);
    let violations = check(&history, &snapshot);
    assert!(
        violations[0].message.starts_with("call 14:"),
        "{violations:#?}"
    );
}

#[test]
fn two_attempts_of_one_key_with_different_outcomes_are_caught() {
    let mut history = history();
    history.push(answered(
        hold(1, 2, "b1", T1, 2),
        409,
        json!({"code": "TICKETS_SOLD_OUT"}),
    ));
    assert_caught(&history, &snapshot(), Kind::DivergentOutcomes, &[]);

    let mut history = self::history();
    history.push(answered(
        pay(2, A1, "b1"),
        200,
        json!({"id": A3, "status": "purchased"}),
    ));
    // Its second 200 names A3, so the payment of A3 had a second acknowledgement too: fine.
    assert_caught(&history, &snapshot(), Kind::DivergentOutcomes, &[]);
}

#[test]
fn answers_that_are_not_outcomes_do_not_diverge() {
    let mut history = history();
    // A retry that found the first attempt still running, then the replayed 201.
    history.push(answered(
        hold(1, 2, "b1", T1, 2),
        409,
        json!({"code": "IDEMPOTENCY_IN_PROGRESS"}),
    ));
    history.push(answered(
        hold(1, 3, "b1", T1, 2),
        201,
        hold_answer(A1, T1, 2, 1000),
    ));
    assert_eq!(check(&history, &snapshot()), Vec::new());
}

#[test]
fn a_purchase_no_payment_call_made_is_caught() {
    let mut history = history();
    history.retain(|a| a.call != 2);
    assert_caught(&history, &snapshot(), Kind::UnexplainedStatus, &[]);
}

#[test]
fn a_declined_payment_leaves_the_hold_reserved_and_an_acked_hold_may_lapse() {
    // A4's only payment was declined (402) and it stays reserved: sound (the base world).
    // A2, acknowledged, then expired instead of cancelled: sound once no cancel claims it.
    let mut history = history();
    history.retain(|a| a.call != 4);
    let mut snapshot = snapshot();
    allocation_mut(&mut snapshot, A2).status = "expired".to_owned();
    assert_eq!(check(&history, &snapshot), Vec::new());
    // But a purchase by a payment that was only ever declined is not.
    allocation_mut(&mut snapshot, A4).status = "purchased".to_owned();
    let violations = check(&history, &snapshot);
    assert!(
        kinds(&violations).contains(&Kind::UnexplainedStatus),
        "{violations:#?}"
    );
}

#[test]
fn an_unsettled_payment_is_reported() {
    let mut snapshot = snapshot();
    allocation_mut(&mut snapshot, A4).status = "payment_pending".to_owned();
    assert_caught(&history(), &snapshot, Kind::Unsettled, &[]);
}

#[test]
fn the_report_renders_every_violation() {
    let mut snapshot = snapshot();
    snapshot.events[0].reserved = 2;
    snapshot.events[0].available = 4;
    let report = Report::new(&history(), &snapshot);
    assert!(!report.sound);
    let text = report.render();
    assert!(text.contains("violations: 1"), "{text}");
    assert!(text.contains("counts_differ: event"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["violations"][0]["kind"], "counts_differ");
}

#[test]
fn one_allocation_acknowledged_to_two_hold_calls_is_caught() {
    let mut history = history();
    // A copy of call 3's 201 under another call: two clients told they hold A2.
    let mut copy = answered(hold(3, 1, "b2", T2, 1), 201, hold_answer(A2, T2, 1, 500));
    copy.call = 13;
    history.push(copy);
    assert_caught(&history, &snapshot(), Kind::DuplicateEffect, &[]);
    let violations = check(&history, &snapshot());
    assert!(
        violations.iter().any(|v| v.message.contains(A2)),
        "{violations:#?}"
    );
    // Attempts of one call repeating their 201 are one acknowledgement.
    let mut history = self::history();
    history.push(answered(
        hold(3, 2, "b2", T2, 1),
        201,
        hold_answer(A2, T2, 1, 500),
    ));
    assert_eq!(check(&history, &snapshot()), Vec::new());
}

#[test]
fn messages_print_ids_and_amounts_not_options() {
    let mut snapshot = snapshot();
    // A charge whose reference names no allocation, one naming an allocation that does not
    // exist, and one that took nothing.
    snapshot.charges.push(ChargeRow {
        reference: "pay_not-an-allocation".to_owned(),
        outcome: "charged".to_owned(),
        amount: Some(700),
    });
    snapshot.charges.push(ChargeRow {
        reference: format!("pay_{}_n1", "ab".repeat(16)),
        outcome: "charged".to_owned(),
        amount: Some(700),
    });
    snapshot.charges[0].amount = None;
    let mut history = history();
    // An admission answered admitted without its id.
    let mut nameless = attempt(13, 1, "POST", &format!("/events/{EVENT}/checkins"));
    nameless.body = Some(json!({ "code": "AQ…", "nonce": "door-9:1" }));
    history.push(answered(nameless, 200, json!({"result": "admitted"})));
    let violations = check(&history, &snapshot);
    let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
    for m in &messages {
        assert!(
            !m.contains("None") && !m.contains("Some(") && !m.contains("\"\""),
            "{messages:#?}"
        );
    }
    let expected = [
        "for no allocation".to_owned(),
        format!(
            "for allocation {}, which does not exist",
            "abababab-abab-abab-abab-abababababab"
        ),
        format!("took nothing, allocation {A1} totals 2000"),
        "admission (no id in the answer)".to_owned(),
    ];
    for e in &expected {
        assert!(
            messages.iter().any(|m| m.contains(e.as_str())),
            "{e}: {messages:#?}"
        );
    }
}

/// The history with A1's payment answer showing its admissions' codes (`CODE-d1`, `CODE-d2`).
fn history_with_codes() -> Vec<Attempt> {
    let mut history = history();
    let paid = history
        .iter_mut()
        .find(|a| a.call == 2)
        .expect("A1's payment");
    paid.answer = Some(json!({"id": A1, "status": "purchased", "admissions": [
        {"id": AD1, "code": "CODE-d1", "status": "valid"},
        {"id": "00000000-0000-4000-8000-0000000000d2", "code": "CODE-d2", "status": "valid"},
    ]}));
    history
}

fn batch(call: u64, code: &str, nonce: &str) -> Attempt {
    let mut a = attempt(call, 1, "POST", &format!("/events/{EVENT}/checkins/batch"));
    a.body = Some(json!({"scans": [
        {"code": code, "nonce": nonce, "scannedAt": "2027-01-01T20:00:00Z"},
    ]}));
    a
}

#[test]
fn a_check_in_no_call_made_is_caught() {
    let d2 = "00000000-0000-4000-8000-0000000000d2";
    // By the admission's row.
    let mut snapshot = snapshot();
    snapshot.admissions[1].status = "checked_in".to_owned();
    snapshot.admissions[1].checked_in = true;
    assert_caught(
        &history_with_codes(),
        &snapshot,
        Kind::UnexplainedStatus,
        &[],
    );
    let violations = check(&history_with_codes(), &snapshot);
    assert!(violations[0].message.contains(d2), "{violations:#?}");

    // By a stored admitted scan alone.
    let mut scanned = self::snapshot();
    scanned.admitted_scans.push(ScanRow {
        event_id: EVENT.to_owned(),
        nonce: "door-5:1".to_owned(),
        admission_id: d2.to_owned(),
    });
    assert_caught(
        &history_with_codes(),
        &scanned,
        Kind::UnexplainedStatus,
        &[],
    );

    // A check-in of its code that timed out may have made it.
    let mut history = history_with_codes();
    let mut uncertain = attempt(13, 1, "POST", &format!("/events/{EVENT}/checkins"));
    uncertain.body = Some(json!({"code": "CODE-d2", "nonce": "door-1:2"}));
    history.push(timed_out(uncertain.clone()));
    assert_eq!(check(&history, &snapshot), Vec::new());
    // One of another code did not.
    uncertain.body = Some(json!({"code": "CODE-d1", "nonce": "door-1:2"}));
    let mut history = history_with_codes();
    history.push(timed_out(uncertain));
    assert_caught(&history, &snapshot, Kind::UnexplainedStatus, &[]);
}

#[test]
fn a_door_s_batch_explains_the_check_ins_it_admitted() {
    let mut snapshot = snapshot();
    snapshot.admissions[1].status = "checked_in".to_owned();
    snapshot.admissions[1].checked_in = true;
    let admitted = |result: &str| {
        answered(
            batch(13, "CODE-d2", "tablet-1:1"),
            200,
            json!({"results": [{"nonce": "tablet-1:1", "result": result}]}),
        )
    };
    let mut history = history_with_codes();
    history.push(admitted("admitted"));
    assert_eq!(check(&history, &snapshot), Vec::new());
    let mut history = history_with_codes();
    history.push(timed_out(batch(13, "CODE-d2", "tablet-1:1")));
    assert_eq!(check(&history, &snapshot), Vec::new());
    // A batch that says its scan was a duplicate did not admit it.
    let mut history = history_with_codes();
    history.push(admitted("duplicate"));
    assert_caught(&history, &snapshot, Kind::UnexplainedStatus, &[]);
}

/// The history preceded by its setup: the event created with 10 tickets, a type, and the
/// quota of 4.
fn history_with_setup() -> Vec<Attempt> {
    let mut setup = vec![
        answered(
            attempt(101, 1, "POST", "/events"),
            201,
            json!({"id": EVENT, "name": "e", "totalTickets": 10, "availableTickets": 10,
                   "ticketTypes": []}),
        ),
        answered(
            attempt(102, 1, "POST", &format!("/events/{EVENT}/ticket-types")),
            201,
            json!({"id": T1, "eventId": EVENT, "name": "t1", "price": 1000}),
        ),
        answered(
            attempt(103, 1, "POST", &format!("/events/{EVENT}/quotas")),
            201,
            json!({"id": QUOTA, "eventId": EVENT, "name": "q", "size": 4,
                   "ticketTypeIds": [T1]}),
        ),
    ];
    for a in &mut setup {
        // Before every other call.
        a.start_us -= 100_000;
        a.end_us -= 100_000;
    }
    setup.extend(history());
    setup
}

fn patch(call: u64, path: &str, body: Value, answer: Option<Value>) -> Attempt {
    let mut a = attempt(call, 1, "PATCH", path);
    a.body = Some(body);
    match answer {
        Some(answer) => answered(a, 200, answer),
        None => timed_out(a),
    }
}

#[test]
fn setup_calls_are_judged_as_setup_and_nothing_else() {
    let history = history_with_setup();
    assert_eq!(check(&history, &snapshot()), Vec::new());
    let s = Report::new(&history, &snapshot()).summary;
    assert_eq!((s.calls, s.acknowledged_holds), (15, 3));
}

#[test]
fn a_capacity_other_than_acknowledged_is_caught() {
    // The event's total moved to 12, its counts following.
    let mut grown = snapshot();
    grown.events[0].total = 12;
    grown.events[0].available = 7;
    assert_caught(&history_with_setup(), &grown, Kind::CapacityChanged, &[]);
    assert_eq!(check(&history(), &grown), Vec::new(), "no setup, no claim");

    // The quota's size moved to 5.
    let mut quota = snapshot();
    quota.quotas[0].size = 5;
    quota.quotas[0].available = 3;
    assert_caught(&history_with_setup(), &quota, Kind::CapacityChanged, &[]);
    let violations = check(&history_with_setup(), &quota);
    assert!(violations[0].message.contains(QUOTA), "{violations:#?}");

    // An acknowledged PATCH to 12 makes 12 right and 10 wrong.
    let path = format!("/events/{EVENT}");
    let mut history = history_with_setup();
    history.push(patch(
        13,
        &path,
        json!({"totalTickets": 12}),
        Some(json!({"id": EVENT, "totalTickets": 12})),
    ));
    assert_eq!(check(&history, &grown), Vec::new());
    assert_caught(&history, &snapshot(), Kind::CapacityChanged, &[]);
    // One that timed out may or may not have landed.
    let mut history = history_with_setup();
    history.push(patch(13, &path, json!({"totalTickets": 12}), None));
    assert_eq!(check(&history, &grown), Vec::new());
    assert_eq!(check(&history, &snapshot()), Vec::new());

    // So for a quota's PATCH.
    let path = format!("/events/{EVENT}/quotas/{QUOTA}");
    let mut history = history_with_setup();
    history.push(patch(
        13,
        &path,
        json!({"size": 5}),
        Some(json!({"id": QUOTA, "eventId": EVENT, "size": 5})),
    ));
    assert_eq!(check(&history, &quota), Vec::new());
    assert_caught(&history, &snapshot(), Kind::CapacityChanged, &[]);
}

#[test]
fn an_empty_history_or_a_database_without_its_events_is_an_error() {
    assert_eq!(
        judge(&[], &snapshot()).unwrap_err(),
        "the history has no calls"
    );
    let mut elsewhere = snapshot();
    elsewhere.events.clear();
    elsewhere.quotas.clear();
    elsewhere.allocations.clear();
    assert_eq!(
        judge(&history(), &elsewhere).unwrap_err(),
        "none of the history's events are in this database"
    );
    assert!(judge(&history(), &snapshot()).unwrap().sound);
}

#[tokio::test]
async fn a_history_of_blank_lines_is_refused_before_the_database() {
    let path = std::env::temp_dir().join(format!("history-blank-{}.jsonl", std::process::id()));
    std::fs::write(&path, "\n   \n\n").unwrap();
    let options = Options {
        history: path.clone(),
        // Nothing listens there: the history is refused first.
        database_url: "postgres://checker:secret@127.0.0.1:1/none".to_owned(),
        settle_seconds: 0,
        fingerprint_secret: None,
        retry_seconds: 0.0,
    };
    let err = run(&options).await.unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err, Unread::Other("the history has no calls".to_owned()));
}

#[tokio::test]
async fn an_unreachable_database_is_named_by_its_host_after_the_timeout() {
    let started = std::time::Instant::now();
    let url = "postgres://checker:hunter2@127.0.0.1:1/none";
    let err = snapshot::connect(url, Duration::from_secs(1))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.starts_with("cannot connect to the database at 127.0.0.1:1 within 1 s"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_tried_again_then_unread_not_judged() {
    // Nothing listens there: connecting is tried again for --retry-seconds, then the check
    // is incomplete (the database unread), never a judgement of the rows.
    let started = std::time::Instant::now();
    let err = Snapshot::load(
        "postgres://checker:hunter2@127.0.0.1:1/none",
        &history(),
        Duration::ZERO,
        None,
        Duration::from_secs(6),
    )
    .await
    .unwrap_err();
    // Each try waits up to 5 s for a connection: a second one began within the window.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let Unread::Database(message) = err else {
        panic!("not a database failure: {err:?}");
    };
    assert!(
        message.starts_with("cannot connect to the database at 127.0.0.1:1"),
        "{message}"
    );
    let Err(Unread::Other(_)) = Snapshot::load(
        "postgres://x:notaport/db",
        &history(),
        Duration::ZERO,
        None,
        Duration::from_secs(60),
    )
    .await
    else {
        panic!("a URL that is not PostgreSQL's is not retried");
    };
}

#[test]
fn a_unix_socket_url_is_named_by_its_socket_not_as_localhost() {
    for url in [
        "postgresql://postgres@%2Ftmp%2Fnope:5432/boxoffice",
        "postgresql://postgres:hunter2@localhost/boxoffice?host=/tmp/nope",
    ] {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        let at = snapshot::where_tried(&options);
        assert_eq!(
            at, "the Unix socket /tmp/nope/.s.PGSQL.5432 (directory /tmp/nope, port 5432)",
            "{url}"
        );
    }
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("/run/pg")
        .port(5433);
    assert_eq!(
        snapshot::where_tried(&options),
        "the Unix socket /run/pg/.s.PGSQL.5433 (directory /run/pg, port 5433)"
    );
    let options: sqlx::postgres::PgConnectOptions =
        "postgres://checker:hunter2@db.example:6543/none"
            .parse()
            .unwrap();
    assert_eq!(snapshot::where_tried(&options), "db.example:6543");
}
