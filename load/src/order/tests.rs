use std::collections::BTreeSet;

use super::*;

fn line(ticket_type_id: &str, quantity: i64) -> Line {
    Line {
        ticket_type_id: ticket_type_id.into(),
        quantity,
    }
}

/// A 201 for 2 tickets of A at 2500 and 1 of B at 1000.
fn allocation() -> Value {
    json!({
        "quantity": 3,
        "currency": "EUR",
        "total": 6000,
        "lines": [
            {"ticketTypeId": "B", "quantity": 1, "unitPrice": 1000, "amount": 1000},
            {"ticketTypeId": "A", "quantity": 2, "unitPrice": 2500, "amount": 5000},
        ],
    })
}

#[test]
fn orders_ask_for_one_to_max_distinct_types_all_of_them_over_a_run() {
    let mut sizes = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for n in 0..3_000 {
        let types = pick_types(n, 3, 3);
        assert!((1..=3).contains(&types.len()), "{n}: {types:?}");
        let distinct: BTreeSet<usize> = types.iter().copied().collect();
        assert_eq!(distinct.len(), types.len(), "{n}: {types:?}");
        assert!(types.iter().all(|&t| t < 3), "{n}: {types:?}");
        sizes.insert(types.len());
        seen.extend(types);
    }
    assert_eq!(sizes, BTreeSet::from([1, 2, 3]));
    assert_eq!(seen, BTreeSet::from([0, 1, 2]));
    // The same request picks the same lines: a run can be replayed.
    assert_eq!(pick_types(41, 3, 3), pick_types(41, 3, 3));
}

#[test]
fn types_are_picked_about_evenly() {
    let mut counts = [0u32; 3];
    for n in 0..30_000 {
        for t in pick_types(n, 3, 1) {
            counts[t] += 1;
        }
    }
    for count in counts {
        assert!((9_000..11_000).contains(&count), "{counts:?}");
    }
}

#[test]
fn max_lines_is_bounded_by_the_types_and_at_least_one() {
    for n in 0..500 {
        assert_eq!(pick_types(n, 1, 3), [0]);
        assert!(pick_types(n, 2, 5).len() <= 2);
        assert_eq!(pick_types(n, 4, 0).len(), 1);
    }
}

#[test]
fn a_one_type_order_keeps_the_quantity_body() {
    assert_eq!(body(&[], 2), json!({"quantity": 2}));
    assert_eq!(
        body(&[line("A", 1), line("C", 1)], 1),
        json!({"lines": [
            {"ticketTypeId": "A", "quantity": 1},
            {"ticketTypeId": "C", "quantity": 1},
        ]})
    );
}

#[test]
fn an_answer_priced_right_passes() {
    let asked = [line("A", 2), line("B", 1)];
    assert_eq!(check_answer(&asked, 3, &allocation()), Ok(()));
    assert_eq!(lines_of(&allocation()), asked);
    // A `{quantity}` order: one line of whatever type the default is.
    let one = json!({
        "quantity": 2, "currency": "JPY", "total": 0,
        "lines": [{"ticketTypeId": "GA", "quantity": 2, "unitPrice": 0, "amount": 0}],
    });
    assert_eq!(check_answer(&[], 2, &one), Ok(()));
    // A server without ticket types answers `{quantity}` orders without lines.
    assert_eq!(check_answer(&[], 2, &json!({"quantity": 2})), Ok(()));
    assert_eq!(lines_of(&json!({"quantity": 2})), []);
}

#[test]
fn an_amount_that_is_not_price_times_quantity_fails() {
    let mut answer = allocation();
    answer["lines"][1]["amount"] = json!(2500);
    answer["total"] = json!(3500);
    assert_eq!(
        check_answer(&[line("A", 2), line("B", 1)], 3, &answer),
        Err("amount 2500 is not unit price 2500 × quantity 2".into())
    );
}

#[test]
fn a_total_that_is_not_the_sum_of_the_amounts_fails() {
    let mut answer = allocation();
    answer["total"] = json!(5000);
    assert_eq!(
        check_answer(&[line("A", 2), line("B", 1)], 3, &answer),
        Err("total Some(5000) is not the sum of the amounts 6000".into())
    );
}

#[test]
fn lines_other_than_asked_fail() {
    let answer = allocation();
    // Another quantity of one type, with the order's quantity still matching.
    assert!(check_answer(&[line("A", 1), line("B", 2)], 3, &answer).is_err());
    // Another type.
    assert!(check_answer(&[line("A", 2), line("C", 1)], 3, &answer).is_err());
    // An order's quantity other than asked.
    assert_eq!(
        check_answer(&[line("A", 2), line("B", 2)], 4, &answer),
        Err("quantity Some(3) for 4 asked".into())
    );
    // Lines that do not add up to the allocation's quantity.
    let mut short = allocation();
    short["quantity"] = json!(2);
    assert_eq!(
        check_answer(&[line("A", 1), line("B", 1)], 2, &short),
        Err("the lines hold 3 tickets, the allocation 2".into())
    );
    // A lines order answered without lines, or a one-type order with two.
    assert_eq!(
        check_answer(&[line("A", 3)], 3, &json!({"quantity": 3})),
        Err("no lines".into())
    );
    assert_eq!(
        check_answer(&[], 3, &answer),
        Err("2 lines for a one-type order".into())
    );
}

#[test]
fn a_line_without_a_price_or_a_currency_fails() {
    let mut answer = allocation();
    answer["lines"][0]
        .as_object_mut()
        .unwrap()
        .remove("unitPrice");
    assert!(check_answer(&[line("A", 2), line("B", 1)], 3, &answer).is_err());
    let mut answer = allocation();
    answer.as_object_mut().unwrap().remove("currency");
    assert_eq!(
        check_answer(&[line("A", 2), line("B", 1)], 3, &answer),
        Err("no currency".into())
    );
}
