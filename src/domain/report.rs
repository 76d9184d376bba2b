//! The sales report of an event: per ticket type and in total, the tickets held, sold and
//! refunded, and the money taken and given back, all in the event's currency's minor unit.

use serde::Serialize;
use uuid::Uuid;

use super::money::Currency;

/// What was sold of one ticket type (see docs/api.md for each figure's definition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeSales {
    pub ticket_type_id: Uuid,
    pub name: String,
    /// The type's current price (orders keep the price they were made at).
    pub price: i64,
    /// Tickets in live holds (`reserved` or `payment_pending`).
    pub reserved: i64,
    /// Tickets paid for and not refunded.
    pub purchased: i64,
    /// Tickets refunded.
    pub refunded: i64,
    /// Money taken: every paid ticket at its order's unit price, refunded ones included.
    pub gross_amount: i64,
    /// Money given back by completed refunds.
    pub refunded_amount: i64,
    /// `grossAmount - refundedAmount`.
    pub net_amount: i64,
}

impl TypeSales {
    /// A type's figures; the net amount is derived, so it always balances.
    pub fn new(
        ticket_type_id: Uuid,
        name: String,
        price: i64,
        tickets: SalesCounts,
        gross_amount: i64,
        refunded_amount: i64,
    ) -> Self {
        Self {
            ticket_type_id,
            name,
            price,
            reserved: tickets.reserved,
            purchased: tickets.purchased,
            refunded: tickets.refunded,
            gross_amount,
            refunded_amount,
            net_amount: gross_amount - refunded_amount,
        }
    }
}

/// Tickets of a type by where they are: held, sold, refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SalesCounts {
    pub reserved: i64,
    pub purchased: i64,
    pub refunded: i64,
}

/// The sums over every type of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesTotals {
    pub reserved: i64,
    pub purchased: i64,
    pub refunded: i64,
    pub gross_amount: i64,
    pub refunded_amount: i64,
    pub net_amount: i64,
}

/// `GET /events/{id}/report`: every type of the event in creation order, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesReport {
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub ticket_types: Vec<TypeSales>,
    pub totals: SalesTotals,
}

impl SalesReport {
    /// The report of these types (read together, from one snapshot), with their totals.
    /// Sums cannot overflow: an event has at most 1,000,000 tickets at most
    /// `money::PRICE_MAX` each.
    pub fn new(currency: Currency, ticket_types: Vec<TypeSales>) -> Self {
        let totals = ticket_types
            .iter()
            .fold(SalesTotals::default(), |sum, t| SalesTotals {
                reserved: sum.reserved + t.reserved,
                purchased: sum.purchased + t.purchased,
                refunded: sum.refunded + t.refunded,
                gross_amount: sum.gross_amount + t.gross_amount,
                refunded_amount: sum.refunded_amount + t.refunded_amount,
                net_amount: sum.net_amount + t.net_amount,
            });
        Self {
            currency,
            ticket_types,
            totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_type_and_net_is_gross_less_refunds() {
        let eur: Currency = "EUR".parse().unwrap();
        let counts = |reserved, purchased, refunded| SalesCounts {
            reserved,
            purchased,
            refunded,
        };
        let a = TypeSales::new(Uuid::nil(), "A".into(), 1500, counts(1, 3, 1), 6000, 1500);
        let b = TypeSales::new(Uuid::max(), "B".into(), 0, counts(2, 0, 0), 0, 0);
        assert_eq!(a.net_amount, 4500);
        let report = SalesReport::new(eur, vec![a, b]);
        assert_eq!(
            report.totals,
            SalesTotals {
                reserved: 3,
                purchased: 3,
                refunded: 1,
                gross_amount: 6000,
                refunded_amount: 1500,
                net_amount: 4500,
            }
        );
        assert_eq!(
            SalesReport::new(eur, Vec::new()).totals,
            SalesTotals::default()
        );
    }
}
