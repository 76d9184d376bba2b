//! The orders of a run over several ticket types: which types each order asks for, its body,
//! and whether a 201 priced it as it must (every line's `amount` its `unitPrice` times its
//! `quantity`, the `total` their sum).

use serde::Serialize;
use serde_json::{Value, json};

/// One line of an order: tickets of one type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub ticket_type_id: String,
    pub quantity: i64,
}

/// SplitMix64: a fixed, well-spread sequence, so that request `n` of any run picks the same
/// lines (a run is reproducible) without a random-number crate. The journey draws its
/// buyers' fates and think times from it too.
pub(crate) fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The types (indices below `types`) order `n` asks for: 1 to `max_lines` of them (at most
/// `types`), distinct, spread evenly over the run.
pub fn pick_types(n: u64, types: usize, max_lines: usize) -> Vec<usize> {
    let types = types.max(1);
    let max_lines = max_lines.clamp(1, types);
    let mut state = mix(n);
    let mut next = |bound: usize| {
        state = mix(state);
        (state % bound as u64) as usize
    };
    let lines = 1 + next(max_lines);
    // A partial Fisher-Yates shuffle: the first `lines` places get distinct types.
    let mut order: Vec<usize> = (0..types).collect();
    for i in 0..lines {
        let j = i + next(types - i);
        order.swap(i, j);
    }
    order.truncate(lines);
    order
}

/// The lines of order `n`: `per_line` tickets of each type [`pick_types`] picks from
/// `ticket_types`; none (a `{quantity}` order of the default type) when there are no types.
pub(crate) fn lines_for(
    n: u64,
    ticket_types: &[String],
    max_lines: usize,
    per_line: i64,
) -> Vec<Line> {
    if ticket_types.is_empty() {
        return Vec::new();
    }
    pick_types(n, ticket_types.len(), max_lines)
        .into_iter()
        .map(|t| Line {
            ticket_type_id: ticket_types[t].clone(),
            quantity: per_line,
        })
        .collect()
}

/// The body of `POST /events/{id}/tickets`: `{quantity}` for an order of the event's default
/// type (no lines), `{lines}` otherwise.
pub fn body(lines: &[Line], quantity: i64) -> Value {
    if lines.is_empty() {
        json!({ "quantity": quantity })
    } else {
        json!({ "lines": lines })
    }
}

/// The lines of an allocation as the server wrote them (`ticketTypeId`, `quantity`), sorted;
/// empty when the body has none (a server without ticket types).
pub fn lines_of(allocation: &Value) -> Vec<Line> {
    let mut lines: Vec<Line> = allocation["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| Line {
                    ticket_type_id: line["ticketTypeId"].as_str().unwrap_or_default().to_owned(),
                    quantity: line["quantity"].as_i64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    lines.sort();
    lines
}

/// Whether a 201 for an order of `asked` lines (none: `{quantity}` of the default type)
/// holds what was asked, priced right: its `quantity` is `quantity` and the sum of its lines;
/// its lines are the ones asked (one line for a `{quantity}` order); each line's `amount` is
/// `unitPrice × quantity`; `total` is the sum of the amounts; it names a `currency`. A body
/// without `lines` passes only for a `{quantity}` order (a server without ticket types).
pub fn check_answer(asked: &[Line], quantity: i64, allocation: &Value) -> Result<(), String> {
    let held = allocation["quantity"].as_i64();
    if held != Some(quantity) {
        return Err(format!("quantity {held:?} for {quantity} asked"));
    }
    let Some(lines) = allocation["lines"].as_array() else {
        return if asked.is_empty() {
            Ok(())
        } else {
            Err("no lines".into())
        };
    };
    let mut sum_quantity = 0i64;
    let mut sum_amount = 0i64;
    for line in lines {
        let field = |name: &str| {
            line[name]
                .as_i64()
                .ok_or_else(|| format!("a line without {name}: {line}"))
        };
        let (unit_price, line_quantity, amount) =
            (field("unitPrice")?, field("quantity")?, field("amount")?);
        if unit_price < 0 || line_quantity < 1 {
            return Err(format!(
                "a line with a negative price or no tickets: {line}"
            ));
        }
        if unit_price.checked_mul(line_quantity) != Some(amount) {
            return Err(format!(
                "amount {amount} is not unit price {unit_price} × quantity {line_quantity}"
            ));
        }
        sum_quantity += line_quantity;
        sum_amount = sum_amount
            .checked_add(amount)
            .ok_or("the amounts overflow")?;
    }
    let total = allocation["total"].as_i64();
    if total != Some(sum_amount) {
        return Err(format!(
            "total {total:?} is not the sum of the amounts {sum_amount}"
        ));
    }
    if sum_quantity != quantity {
        return Err(format!(
            "the lines hold {sum_quantity} tickets, the allocation {quantity}"
        ));
    }
    if !allocation["currency"].is_string() {
        return Err("no currency".into());
    }
    let held_lines = lines_of(allocation);
    let mut asked = asked.to_vec();
    asked.sort();
    if asked.is_empty() && held_lines.len() != 1 {
        return Err(format!("{} lines for a one-type order", held_lines.len()));
    }
    if !asked.is_empty() && held_lines != asked {
        return Err(format!("lines {held_lines:?} for {asked:?} asked"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
