//! Deciding which purchase requests of a batch get tickets: pure logic, run under the event
//! row lock against the locked counts.

use std::collections::HashMap;

use crate::domain::fingerprint::FingerprintHash;
use crate::domain::quantity::Quantity;
use crate::domain::refusal::Refusal;

/// One purchase request waiting for a decision.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Tickets asked for.
    pub quantity: Quantity,
    /// Who asks (the per-buyer cap counts by this).
    pub buyer: FingerprintHash,
}

/// Grants requests strictly in arrival order while stock lasts. A request that does not fit
/// gets its own refusal; later, smaller requests may still fit. The per-buyer cap counts what
/// each buyer already holds plus what this batch has granted them so far.
///
/// `held` gives each capped buyer's current tickets for the event (absent means none).
pub fn decide<'a>(
    available: i32,
    cap: Option<i32>,
    held: &HashMap<String, i64>,
    asks: impl IntoIterator<Item = &'a Ask>,
) -> Vec<Result<(), Refusal>> {
    let mut remaining = available;
    let mut granted_to: HashMap<&str, i64> = HashMap::new();
    asks.into_iter()
        .map(|ask| {
            if remaining == 0 {
                return Err(Refusal::TicketsSoldOut);
            }
            let quantity = ask.quantity.get();
            if remaining < quantity {
                return Err(Refusal::InsufficientTickets {
                    available: remaining,
                });
            }
            if let Some(limit) = cap {
                let buyer = ask.buyer.as_str();
                let already = held.get(buyer).copied().unwrap_or(0)
                    + granted_to.get(buyer).copied().unwrap_or(0);
                if already + i64::from(quantity) > i64::from(limit) {
                    return Err(Refusal::FingerprintLimit {
                        limit,
                        held: already,
                    });
                }
                *granted_to.entry(buyer).or_default() += i64::from(quantity);
            }
            remaining -= quantity;
            Ok(())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fingerprint::{FingerprintKey, FingerprintSource};

    fn buyer(name: &str) -> FingerprintHash {
        FingerprintKey::new("k").hash(&FingerprintSource::Client(name.into()))
    }

    fn ask(quantity: i32, name: &str) -> Ask {
        Ask {
            quantity: Quantity::parse(Some(i64::from(quantity)), 10).expect("a valid quantity"),
            buyer: buyer(name),
        }
    }

    fn codes(results: &[Result<(), Refusal>]) -> Vec<&'static str> {
        results
            .iter()
            .map(|r| match r {
                Ok(()) => "ok",
                Err(Refusal::TicketsSoldOut) => "sold_out",
                Err(Refusal::InsufficientTickets { .. }) => "insufficient",
                Err(Refusal::FingerprintLimit { .. }) => "limit",
                Err(_) => "other",
            })
            .collect()
    }

    #[test]
    fn grants_in_arrival_order_while_stock_lasts() {
        let asks = [
            ask(2, "a"),
            ask(2, "b"),
            ask(2, "c"),
            ask(1, "d"),
            ask(1, "e"),
        ];
        let results = decide(5, None, &HashMap::new(), &asks);
        assert_eq!(
            codes(&results),
            ["ok", "ok", "insufficient", "ok", "sold_out"]
        );
        assert!(matches!(
            results[2],
            Err(Refusal::InsufficientTickets { available: 1 })
        ));
    }

    #[test]
    fn cap_counts_held_tickets_and_earlier_grants_in_the_batch() {
        let mut held = HashMap::new();
        held.insert(buyer("a").as_str().to_owned(), 1);
        let asks = [ask(1, "a"), ask(1, "a"), ask(2, "b"), ask(1, "b")];
        let results = decide(100, Some(2), &held, &asks);
        assert_eq!(codes(&results), ["ok", "limit", "ok", "limit"]);
        assert!(matches!(
            results[1],
            Err(Refusal::FingerprintLimit { limit: 2, held: 2 })
        ));
    }

    #[test]
    fn nothing_left_means_sold_out_for_everyone() {
        let results = decide(0, None, &HashMap::new(), &[ask(1, "a"), ask(3, "b")]);
        assert_eq!(codes(&results), ["sold_out", "sold_out"]);
    }
}
