//! A refund as an organiser asks for it, and which tickets of an order it gives back.

use std::collections::HashSet;

use uuid::Uuid;

use super::allocation::RefundLine;
use super::catalogue::AllocationLine;
use super::event_name::is_blank;
use super::grant::Rejection;
use super::order::MAX_LINES;
use super::refusal::{FieldError, Refusal};

/// Longest refund reason, in characters.
pub const REASON_MAX_CHARS: usize = 500;

/// One of `lines` as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundLineDraft {
    pub ticket_type_id: Option<String>,
    pub quantity: Option<i64>,
}

/// A refund's fields as they arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefundDraft {
    pub lines: Option<Vec<RefundLineDraft>>,
    pub reason: Option<String>,
}

/// A refund checked for shape: which tickets (`None`: everything not yet refunded) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAsk {
    /// (type, quantity, index of the line in the request) for each line asked.
    pub lines: Option<Vec<(Uuid, i32, usize)>>,
    pub reason: Option<String>,
}

impl RefundAsk {
    /// Checks the shape: 1 to 20 lines of distinct types, each at least 1 ticket; a reason of
    /// at most [`REASON_MAX_CHARS`] characters without control characters (blank, with no
    /// visible character, is none).
    pub fn parse(draft: RefundDraft) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut reason = draft
            .reason
            .map(|reason| reason.trim().to_owned())
            .filter(|reason| !reason.is_empty());
        if let Some(text) = &reason {
            if text.chars().count() > REASON_MAX_CHARS {
                errors.push(FieldError::new(
                    "reason",
                    format!("must be at most {REASON_MAX_CHARS} characters"),
                ));
            } else if text.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "reason",
                    "must not contain control characters",
                ));
            } else if is_blank(text) {
                // Blank, as a name is: only invisible characters (a zero-width space, a
                // soft hyphen) would be kept as a reason that shows nothing.
                reason = None;
            }
        }
        let lines = match draft.lines {
            None => None,
            Some(lines) if lines.is_empty() || lines.len() > MAX_LINES => {
                errors.push(FieldError::new(
                    "lines",
                    format!(
                        "must have 1 to {MAX_LINES} lines, or be left out to refund everything"
                    ),
                ));
                None
            }
            Some(lines) => Some(parse_lines(lines, &mut errors)),
        };
        if errors.is_empty() {
            Ok(Self { lines, reason })
        } else {
            Err(errors)
        }
    }
}

fn parse_lines(
    lines: Vec<RefundLineDraft>,
    errors: &mut Vec<FieldError>,
) -> Vec<(Uuid, i32, usize)> {
    let mut seen = HashSet::new();
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let field = format!("lines[{i}].ticketTypeId");
        let ticket_type = match line.ticket_type_id.as_deref().map(Uuid::try_parse) {
            None => {
                errors.push(FieldError::new(&field, "is required"));
                None
            }
            Some(Err(_)) => {
                errors.push(FieldError::new(&field, "must be a ticket type id (a UUID)"));
                None
            }
            Some(Ok(id)) if !seen.insert(id) => {
                errors.push(FieldError::new(
                    &field,
                    "names a ticket type that an earlier line already has",
                ));
                None
            }
            Some(Ok(id)) => Some(id),
        };
        let quantity = match line.quantity {
            Some(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n as i32),
            Some(n) => {
                let rule = if n < 1 {
                    "must be at least 1".to_owned()
                } else {
                    format!("must be at most {}", i32::MAX)
                };
                errors.push(FieldError::new(format!("lines[{i}].quantity"), rule));
                None
            }
            None => {
                errors.push(FieldError::new(
                    format!("lines[{i}].quantity"),
                    "is required",
                ));
                None
            }
        };
        if let (Some(id), Some(quantity)) = (ticket_type, quantity) {
            parsed.push((id, quantity, i));
        }
    }
    parsed
}

/// The lines a refund gives back, with their money: each asked line must be a line of the
/// order and ask for no more than it has left to refund (`pending` gives, by type, the
/// tickets of refunds already under way, which count as refunded); without lines, everything
/// left. Nothing left to refund, or more asked than left: `RefundExceedsPurchase`.
pub fn plan(
    order: &[AllocationLine],
    pending: &[(Uuid, i32)],
    ask: &RefundAsk,
) -> Result<Vec<RefundLine>, Rejection> {
    let left = |line: &AllocationLine| {
        let under_way = pending
            .iter()
            .filter(|(id, _)| *id == line.ticket_type_id)
            .map(|(_, n)| n)
            .sum::<i32>();
        line.quantity - line.refunded_quantity - under_way
    };
    let refund = |line: &AllocationLine, quantity: i32| RefundLine {
        ticket_type_id: line.ticket_type_id,
        quantity,
        amount: line.unit_price * i64::from(quantity),
    };
    let lines: Vec<RefundLine> = match &ask.lines {
        None => order
            .iter()
            .filter(|line| left(line) > 0)
            .map(|line| refund(line, left(line)))
            .collect(),
        Some(asked) => {
            let mut lines = Vec::with_capacity(asked.len());
            for (ticket_type, quantity, i) in asked {
                let Some(line) = order.iter().find(|l| l.ticket_type_id == *ticket_type) else {
                    return Err(Rejection::Invalid(FieldError::new(
                        format!("lines[{i}].ticketTypeId"),
                        "names no line of this order",
                    )));
                };
                if *quantity > left(line) {
                    return Err(Rejection::Refused(Refusal::RefundExceedsPurchase {
                        ticket_type_id: Some(line.ticket_type_id),
                        refundable: left(line).max(0),
                    }));
                }
                lines.push(refund(line, *quantity));
            }
            lines
        }
    };
    if lines.is_empty() {
        return Err(Rejection::Refused(Refusal::RefundExceedsPurchase {
            ticket_type_id: None,
            refundable: 0,
        }));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: Uuid, quantity: i32, refunded: i32, price: i64) -> AllocationLine {
        AllocationLine {
            ticket_type_id: id,
            ticket_type_name: "t".into(),
            quantity,
            unit_price: price,
            amount: price * i64::from(quantity),
            refunded_quantity: refunded,
        }
    }

    #[test]
    fn everything_left_or_the_lines_asked_within_what_is_left() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let order = [line(a, 3, 1, 1_000), line(b, 2, 0, 250)];
        let all = RefundAsk {
            lines: None,
            reason: None,
        };
        let planned = plan(&order, &[(b, 1)], &all).expect("something left");
        assert_eq!(
            planned
                .iter()
                .map(|l| (l.quantity, l.amount))
                .collect::<Vec<_>>(),
            [(2, 2_000), (1, 250)]
        );
        let two_of_a = RefundAsk {
            lines: Some(vec![(a, 2, 0)]),
            reason: None,
        };
        assert_eq!(plan(&order, &[], &two_of_a).expect("fits")[0].amount, 2_000);
        let three_of_a = RefundAsk {
            lines: Some(vec![(a, 3, 0)]),
            reason: None,
        };
        assert_eq!(
            plan(&order, &[], &three_of_a),
            Err(Rejection::Refused(Refusal::RefundExceedsPurchase {
                ticket_type_id: Some(a),
                refundable: 2
            }))
        );
        let done = [line(a, 3, 3, 1_000)];
        assert!(matches!(
            plan(&done, &[], &all),
            Err(Rejection::Refused(Refusal::RefundExceedsPurchase { .. }))
        ));
        let foreign = RefundAsk {
            lines: Some(vec![(Uuid::nil(), 1, 4)]),
            reason: None,
        };
        assert!(matches!(
            plan(&order, &[], &foreign),
            Err(Rejection::Invalid(e)) if e.field == "lines[4].ticketTypeId"
        ));
    }

    #[test]
    fn the_shape_is_checked_by_field() {
        let fields = |draft: RefundDraft| -> Vec<String> {
            RefundAsk::parse(draft)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        let a = "0191f1a0-0000-7000-8000-000000000001".to_owned();
        let draft = RefundDraft {
            lines: Some(vec![
                RefundLineDraft {
                    ticket_type_id: Some(a.clone()),
                    quantity: Some(0),
                },
                RefundLineDraft {
                    ticket_type_id: Some(a),
                    quantity: Some(1),
                },
            ]),
            reason: Some("x".repeat(REASON_MAX_CHARS + 1)),
        };
        assert_eq!(
            fields(draft),
            ["reason", "lines[0].quantity", "lines[1].ticketTypeId"]
        );
        assert_eq!(
            fields(RefundDraft {
                lines: Some(vec![]),
                reason: None
            }),
            ["lines"]
        );
        let blank = RefundAsk::parse(RefundDraft {
            lines: None,
            reason: Some("  ".into()),
        })
        .expect("valid");
        assert_eq!(blank.reason, None);
    }

    #[test]
    fn a_quantity_is_told_which_bound_it_breaks() {
        let messages = |quantity: i64| -> Vec<String> {
            RefundAsk::parse(RefundDraft {
                lines: Some(vec![RefundLineDraft {
                    ticket_type_id: Some("0191f1a0-0000-7000-8000-000000000001".to_owned()),
                    quantity: Some(quantity),
                }]),
                reason: None,
            })
            .unwrap_err()
            .into_iter()
            .map(|e| e.message)
            .collect()
        };
        assert_eq!(messages(0), ["must be at least 1"]);
        assert_eq!(messages(-5), ["must be at least 1"]);
        assert_eq!(messages(2_147_483_648), ["must be at most 2147483647"]);
    }
}
