//! An order as a client gives it: one line (`{quantity, ticketTypeId?}`) or several
//! (`{lines: [{ticketTypeId, quantity}]}`), checked for shape before it meets the catalogue.

use std::collections::HashSet;

use uuid::Uuid;

use super::grant::LineAsk;
use super::quantity::Quantity;
use super::refusal::FieldError;

/// Most lines one order may have.
pub const MAX_LINES: usize = 20;

/// One of `lines` as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineDraft {
    pub ticket_type_id: Option<String>,
    pub quantity: Option<i64>,
}

/// The order's fields as they arrived, each possibly missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDraft {
    pub quantity: Option<i64>,
    pub ticket_type_id: Option<String>,
    pub lines: Option<Vec<LineDraft>>,
}

/// The order's lines, checked for shape: exactly one of `quantity` and `lines`; 1 to
/// [`MAX_LINES`] lines of distinct types; each quantity at least 1; the whole order at most
/// `max_tickets` (`--max-tickets-per-purchase`). Whether each type exists, is active and
/// sells that many per order is decided under the lock, against the catalogue.
pub fn parse_lines(draft: OrderDraft, max_tickets: i32) -> Result<Vec<LineAsk>, Vec<FieldError>> {
    match (draft.quantity, draft.lines) {
        (Some(_), Some(_)) => Err(vec![FieldError::new(
            "lines",
            "give either quantity (one line) or lines, not both",
        )]),
        (None, None) if draft.ticket_type_id.is_none() => {
            Err(vec![FieldError::new("quantity", "is required")])
        }
        (None, None) => Err(vec![FieldError::new(
            "quantity",
            "is required with ticketTypeId",
        )]),
        (quantity @ Some(_), None) => {
            let mut errors = Vec::new();
            let ticket_type_id =
                parse_type(draft.ticket_type_id.as_deref(), "ticketTypeId", &mut errors);
            let quantity = Quantity::parse(quantity, max_tickets)
                .map_err(|message| errors.push(FieldError::new("quantity", message)))
                .ok();
            match quantity {
                Some(quantity) if errors.is_empty() => Ok(vec![LineAsk {
                    ticket_type_id,
                    quantity,
                    field_prefix: String::new(),
                }]),
                _ => Err(errors),
            }
        }
        (None, Some(lines)) => {
            if draft.ticket_type_id.is_some() {
                return Err(vec![FieldError::new(
                    "ticketTypeId",
                    "goes inside each of lines, not beside them",
                )]);
            }
            parse_many(lines, max_tickets)
        }
    }
}

fn parse_many(lines: Vec<LineDraft>, max_tickets: i32) -> Result<Vec<LineAsk>, Vec<FieldError>> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(vec![FieldError::new(
            "lines",
            format!("must have 1 to {MAX_LINES} lines"),
        )]);
    }
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let prefix = format!("lines[{i}].");
        let field = format!("{prefix}ticketTypeId");
        let ticket_type_id = match line.ticket_type_id.as_deref() {
            None => {
                errors.push(FieldError::new(&field, "is required"));
                None
            }
            text => parse_type(text, &field, &mut errors),
        };
        if let Some(id) = ticket_type_id
            && !seen.insert(id)
        {
            errors.push(FieldError::new(
                &field,
                "names a ticket type that an earlier line already has",
            ));
        }
        let quantity = Quantity::parse(line.quantity, max_tickets)
            .map_err(|message| errors.push(FieldError::new(format!("{prefix}quantity"), message)))
            .ok();
        if let (Some(id), Some(quantity)) = (ticket_type_id, quantity) {
            parsed.push(LineAsk {
                ticket_type_id: Some(id),
                quantity,
                field_prefix: prefix,
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // At most 20 lines of at most 1,000,000 tickets each: the sum fits an i64 exactly.
    let total: i64 = parsed
        .iter()
        .map(|line| i64::from(line.quantity.get()))
        .sum();
    if total > i64::from(max_tickets) {
        return Err(vec![FieldError::new(
            "lines",
            format!("must ask for at most {max_tickets} tickets in all"),
        )]);
    }
    Ok(parsed)
}

fn parse_type(text: Option<&str>, field: &str, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let text = text?;
    Uuid::try_parse(text)
        .map_err(|_| errors.push(FieldError::new(field, "must be a ticket type id (a UUID)")))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<Vec<LineAsk>, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn line(id: &str, quantity: i64) -> LineDraft {
        LineDraft {
            ticket_type_id: Some(id.into()),
            quantity: Some(quantity),
        }
    }

    const A: &str = "0191f1a0-0000-7000-8000-000000000001";
    const B: &str = "0191f1a0-0000-7000-8000-000000000002";

    #[test]
    fn one_line_orders_keep_the_quantity_field() {
        let lines = parse_lines(
            OrderDraft {
                quantity: Some(3),
                ..OrderDraft::default()
            },
            10,
        )
        .expect("valid");
        assert_eq!((lines.len(), lines[0].ticket_type_id), (1, None));
        assert_eq!(fields(parse_lines(OrderDraft::default(), 10)), ["quantity"]);
        let typed = OrderDraft {
            quantity: Some(0),
            ticket_type_id: Some("nope".into()),
            ..OrderDraft::default()
        };
        assert_eq!(fields(parse_lines(typed, 10)), ["ticketTypeId", "quantity"]);
    }

    #[test]
    fn lines_are_one_to_twenty_distinct_within_the_limit() {
        let ok = OrderDraft {
            lines: Some(vec![line(A, 2), line(B, 3)]),
            ..OrderDraft::default()
        };
        assert_eq!(parse_lines(ok, 5).expect("valid").len(), 2);
        let cases = [
            (Some(vec![]), None, vec!["lines"]),
            (Some(vec![line(A, 1); 21]), None, vec!["lines"]),
            (
                Some(vec![line(A, 1), line(A, 1)]),
                None,
                vec!["lines[1].ticketTypeId"],
            ),
            (Some(vec![line(A, 0)]), None, vec!["lines[0].quantity"]),
            (Some(vec![line(A, 3), line(B, 3)]), None, vec!["lines"]),
            (
                Some(vec![LineDraft::default()]),
                None,
                vec!["lines[0].ticketTypeId", "lines[0].quantity"],
            ),
            (Some(vec![line(A, 1)]), Some(1), vec!["lines"]),
        ];
        for (lines, quantity, expected) in cases {
            let draft = OrderDraft {
                lines,
                quantity,
                ..OrderDraft::default()
            };
            assert_eq!(fields(parse_lines(draft.clone(), 5)), expected, "{draft:?}");
        }
    }
}
