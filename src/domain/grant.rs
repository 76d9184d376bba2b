//! Deciding which orders of a batch get tickets: pure logic, run under the event row lock
//! (and the event's quota row locks) against the locked counts.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::catalogue::{Quota, SalesWindow, TicketType};
use crate::domain::fingerprint::FingerprintHash;
use crate::domain::quantity::Quantity;
use crate::domain::refusal::{FieldError, LineAvailability, Refusal};

/// One line of an order as asked: a type (`None`: the event's default type) and how many.
#[derive(Debug, Clone)]
pub struct LineAsk {
    pub ticket_type_id: Option<Uuid>,
    pub quantity: Quantity,
    /// Prefix of this line's field names in errors: "" for a `{quantity, ticketTypeId}`
    /// body, "lines[2]." for the third of `lines`.
    pub field_prefix: String,
}

/// One order waiting for a decision: its lines (distinct types, at least one) and who asks.
#[derive(Debug, Clone)]
pub struct Ask {
    pub lines: Vec<LineAsk>,
    /// Who asks (the per-buyer cap counts by this).
    pub buyer: FingerprintHash,
}

impl Ask {
    /// Tickets the whole order asks for. Cannot overflow: the lines are at most 20 and their
    /// sum is bounded by the purchase limit when the order is parsed.
    pub fn quantity(&self) -> i32 {
        self.lines.iter().map(|line| line.quantity.get()).sum()
    }
}

/// A line as granted: its type, and the price it is sold at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedLine {
    pub ticket_type_id: Uuid,
    pub ticket_type_name: String,
    pub quantity: i32,
    /// The type's price under the lock: what this order pays, whatever later changes.
    pub unit_price: i64,
}

/// An order as granted: every line held, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub lines: Vec<GrantedLine>,
    /// Tickets over all lines.
    pub quantity: i32,
    /// Sum of `unit_price × quantity` over the lines, in minor units. At most
    /// `PRICE_MAX × max tickets per purchase`, far inside `i64`.
    pub total: i64,
}

/// Why an order was not granted: a field that names no sellable line (answered 422), or a
/// rule of the sale (answered 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Invalid(FieldError),
    Refused(Refusal),
}

/// What the decisions are made against: the event's counts, window and cap, its types and
/// its quotas (all read under the locks), what its waiting lists keep from the public, and
/// the database clock.
#[derive(Debug, Clone, Copy)]
pub struct SaleState<'a> {
    pub now: OffsetDateTime,
    pub event_sales: SalesWindow,
    pub available: i32,
    /// Of `available`, the tickets set aside for the head of a waiting list (each quota's
    /// share is its `set_aside_tickets`): nobody else can have them.
    pub set_aside: i32,
    pub cap: Option<i32>,
    pub types: &'a [TicketType],
    pub quotas: &'a [Quota],
    /// Types someone waits for: the public gets none of them (they go to the line, in order).
    pub waiting_types: &'a HashSet<Uuid>,
}

/// The per-buyer cap: a buyer who holds `held` tickets of the event may take `wanted` more
/// only within `limit`; otherwise `FingerprintLimit`, carrying both. The one check of the cap,
/// for a purchase ([`decide`]), a waiting-list join and the walk of the line.
pub fn within_cap(limit: i32, held: i64, wanted: i32) -> Result<(), Refusal> {
    if held + i64::from(wanted) > i64::from(limit) {
        Err(Refusal::FingerprintLimit { limit, held })
    } else {
        Ok(())
    }
}

/// Decides orders strictly in arrival order, against running counts of the event and of
/// each quota: an order gets every line or nothing, checked against what earlier orders of
/// the batch were granted. A refused order takes nothing; later, smaller orders may still
/// fit. The per-buyer cap counts what each buyer already holds plus what this batch has
/// granted them so far, over all types.
///
/// The checks, in order: each line names an active type of the event within its
/// `maxPerOrder` (else `Invalid`, naming the field); the event and each line's type are on
/// sale now (`SalesClosed`); each requested type has some ticket left (`TicketsSoldOut`); the
/// event and every quota involved can take the whole order, counting its other lines
/// (`InsufficientTickets`); the cap (`FingerprintLimit`).
///
/// `held` gives each capped buyer's current tickets for the event (absent means none).
pub fn decide<'a>(
    sale: SaleState<'_>,
    held: &HashMap<String, i64>,
    asks: impl IntoIterator<Item = &'a Ask>,
) -> Vec<Result<Grant, Rejection>> {
    let mut counts = Counts {
        event: sale.available - sale.set_aside,
        quotas: sale
            .quotas
            .iter()
            .map(|quota| (quota.id, quota.available_tickets - quota.set_aside_tickets))
            .collect(),
        memberships: memberships(sale.quotas),
        closed: sale.waiting_types,
    };
    let mut granted_to: HashMap<&str, i64> = HashMap::new();
    asks.into_iter()
        .map(|ask| {
            let lines = resolve(sale, ask)?;
            let wanted: i32 = lines.iter().map(|(_, quantity)| quantity).sum();
            let per_line: Vec<i32> = lines
                .iter()
                .map(|(ticket_type, _)| counts.available_of(ticket_type.id))
                .collect();
            if let Some((ticket_type, _)) = lines.iter().zip(&per_line).find(|(_, n)| **n == 0) {
                return Err(Rejection::Refused(Refusal::TicketsSoldOut {
                    ticket_type_id: ticket_type.0.id,
                }));
            }
            if !counts.fits(&lines) {
                let available = counts.most_for(&lines);
                return Err(Rejection::Refused(Refusal::InsufficientTickets {
                    available,
                    lines: lines
                        .iter()
                        .zip(&per_line)
                        .map(|((ticket_type, _), available)| LineAvailability {
                            ticket_type_id: ticket_type.id,
                            available: *available,
                        })
                        .collect(),
                }));
            }
            if let Some(limit) = sale.cap {
                let buyer = ask.buyer.as_str();
                let already = held.get(buyer).copied().unwrap_or(0)
                    + granted_to.get(buyer).copied().unwrap_or(0);
                within_cap(limit, already, wanted).map_err(Rejection::Refused)?;
                *granted_to.entry(buyer).or_default() += i64::from(wanted);
            }
            counts.take(&lines);
            // The lines in the event's type order (`types` is in creation order), the order an
            // allocation's lines are read back in: the 201 equals a later read of the hold.
            let mut lines = lines;
            lines.sort_by_key(|(ticket_type, _)| {
                sale.types.iter().position(|t| t.id == ticket_type.id)
            });
            let lines: Vec<GrantedLine> = lines
                .into_iter()
                .map(|(ticket_type, quantity)| GrantedLine {
                    ticket_type_id: ticket_type.id,
                    ticket_type_name: ticket_type.name.clone(),
                    quantity,
                    unit_price: ticket_type.price,
                })
                .collect();
            let total = lines
                .iter()
                .map(|line| line.unit_price * i64::from(line.quantity))
                .sum();
            Ok(Grant {
                lines,
                quantity: wanted,
                total,
            })
        })
        .collect()
}

/// The running counts of one batch: the event's available tickets, each quota's (less what
/// is set aside for waiting lists), which quotas each type counts against, and the types
/// closed to the public because someone waits for them.
struct Counts<'a> {
    event: i32,
    quotas: HashMap<Uuid, i32>,
    memberships: HashMap<Uuid, Vec<Uuid>>,
    closed: &'a HashSet<Uuid>,
}

impl Counts<'_> {
    fn quotas_of(&self, ticket_type: Uuid) -> &[Uuid] {
        self.memberships
            .get(&ticket_type)
            .map_or(&[], Vec::as_slice)
    }

    /// Tickets of the type left now: none while someone waits for it, else the least of the
    /// event's and of its quotas'.
    fn available_of(&self, ticket_type: Uuid) -> i32 {
        if self.closed.contains(&ticket_type) {
            return 0;
        }
        self.quotas_of(ticket_type)
            .iter()
            .map(|quota| self.quotas[quota])
            .fold(self.event, i32::min)
            .max(0)
    }

    /// Tickets each quota would take for `lines` (a quota counts every line of a type it
    /// contains).
    fn demand(&self, lines: &[(&TicketType, i32)]) -> HashMap<Uuid, i32> {
        let mut demand: HashMap<Uuid, i32> = HashMap::new();
        for (ticket_type, quantity) in lines {
            for quota in self.quotas_of(ticket_type.id) {
                *demand.entry(*quota).or_default() += quantity;
            }
        }
        demand
    }

    fn fits(&self, lines: &[(&TicketType, i32)]) -> bool {
        let wanted: i32 = lines.iter().map(|(_, quantity)| quantity).sum();
        wanted <= self.event
            && self
                .demand(lines)
                .iter()
                .all(|(quota, wanted)| *wanted <= self.quotas[quota])
    }

    /// The most tickets the types of `lines` could sell together now: each line in turn takes
    /// all its type has left after the lines before it, from the event and from every quota
    /// of the type. Lines whose types share a quota share its tickets, so this is at most the
    /// quota's size, not the sum of what each type alone has left. (With quotas nested or
    /// apart, no other split sells more; with quotas that overlap otherwise, it is a split
    /// the order could have, if maybe not the largest.)
    fn most_for(&self, lines: &[(&TicketType, i32)]) -> i32 {
        let mut event = self.event;
        let mut quotas = self.quotas.clone();
        let mut most = 0;
        for (ticket_type, _) in lines {
            let id = ticket_type.id;
            if self.closed.contains(&id) {
                continue;
            }
            let of_type = self.quotas_of(id);
            let taken = of_type
                .iter()
                .map(|quota| quotas[quota])
                .fold(event, i32::min)
                .max(0);
            for quota in of_type {
                if let Some(left) = quotas.get_mut(quota) {
                    *left -= taken;
                }
            }
            event -= taken;
            most += taken;
        }
        most
    }

    fn take(&mut self, lines: &[(&TicketType, i32)]) {
        for (quota, wanted) in self.demand(lines) {
            if let Some(left) = self.quotas.get_mut(&quota) {
                *left -= wanted;
            }
        }
        self.event -= lines.iter().map(|(_, quantity)| quantity).sum::<i32>();
    }
}

/// For each type, the quotas that contain it.
fn memberships(quotas: &[Quota]) -> HashMap<Uuid, Vec<Uuid>> {
    let mut of_type: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for quota in quotas {
        for ticket_type in &quota.ticket_type_ids {
            of_type.entry(*ticket_type).or_default().push(quota.id);
        }
    }
    of_type
}

/// The order's lines resolved to the event's types, checked for everything but stock: each
/// names an active type within its per-order maximum, and the event and each type are on
/// sale now.
fn resolve<'t>(sale: SaleState<'t>, ask: &Ask) -> Result<Vec<(&'t TicketType, i32)>, Rejection> {
    let mut lines = Vec::with_capacity(ask.lines.len());
    for line in &ask.lines {
        let field = |name: &str| format!("{}{name}", line.field_prefix);
        let found = match line.ticket_type_id {
            None => sale.types.iter().find(|t| t.is_default),
            Some(id) => sale.types.iter().find(|t| t.id == id),
        };
        let ticket_type = match found {
            Some(ticket_type) if ticket_type.active => ticket_type,
            // A line without a type is of the default one: the client named no type, so the
            // message says why one is needed rather than blame a type it did not send.
            Some(_) if line.ticket_type_id.is_none() => {
                return Err(Rejection::Invalid(FieldError::new(
                    field("ticketTypeId"),
                    "is required: the event's default ticket type is not on sale",
                )));
            }
            Some(_) => {
                return Err(Rejection::Invalid(FieldError::new(
                    field("ticketTypeId"),
                    "names a ticket type that is not active",
                )));
            }
            None => {
                return Err(Rejection::Invalid(FieldError::new(
                    field("ticketTypeId"),
                    "names no ticket type of this event",
                )));
            }
        };
        let quantity = line.quantity.get();
        if let Some(max) = ticket_type.max_per_order
            && quantity > max
        {
            return Err(Rejection::Invalid(FieldError::new(
                field("quantity"),
                format!("must be at most {max} for this ticket type (its maxPerOrder)"),
            )));
        }
        lines.push((ticket_type, quantity));
    }
    for (ticket_type, _) in &lines {
        let closed_by = if !sale.event_sales.contains(sale.now) {
            Some(sale.event_sales)
        } else if !ticket_type.sales.contains(sale.now) {
            Some(ticket_type.sales)
        } else {
            None
        };
        if let Some(window) = closed_by {
            return Err(Rejection::Refused(Refusal::SalesClosed {
                ticket_type_id: ticket_type.id,
                sales_start_at: window.start,
                sales_end_at: window.end,
            }));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fingerprint::{FingerprintKey, FingerprintSource};
    use time::macros::datetime;

    fn buyer(name: &str) -> FingerprintHash {
        FingerprintKey::new("k").hash(&FingerprintSource::Client(name.into()))
    }

    fn quantity(n: i32) -> Quantity {
        Quantity::parse(Some(i64::from(n)), 100).expect("a valid quantity")
    }

    fn ask(quantity_asked: i32, name: &str) -> Ask {
        order(&[(None, quantity_asked)], name)
    }

    fn order(lines: &[(Option<Uuid>, i32)], name: &str) -> Ask {
        Ask {
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, (ticket_type_id, n))| LineAsk {
                    ticket_type_id: *ticket_type_id,
                    quantity: quantity(*n),
                    field_prefix: format!("lines[{i}]."),
                })
                .collect(),
            buyer: buyer(name),
        }
    }

    fn ticket_type(name: &str, price: i64) -> TicketType {
        TicketType {
            id: Uuid::now_v7(),
            event_id: Uuid::nil(),
            name: name.into(),
            description: None,
            price,
            max_per_order: None,
            sales: SalesWindow::default(),
            active: true,
            is_default: name == "General admission",
            created_at: datetime!(2027-01-01 00:00 UTC),
        }
    }

    fn quota(available: i32, types: &[&TicketType]) -> Quota {
        Quota {
            id: Uuid::now_v7(),
            event_id: Uuid::nil(),
            name: "q".into(),
            size: available,
            available_tickets: available,
            reserved_tickets: 0,
            purchased_tickets: 0,
            set_aside_tickets: 0,
            ticket_type_ids: types.iter().map(|t| t.id).collect(),
        }
    }

    const NOW: OffsetDateTime = datetime!(2027-06-01 12:00 UTC);

    /// No waiting list.
    static NO_LINE: std::sync::LazyLock<HashSet<Uuid>> = std::sync::LazyLock::new(HashSet::new);

    #[test]
    fn a_type_someone_waits_for_is_sold_out_to_the_public_and_set_asides_are_withheld() {
        let types = [ticket_type("General admission", 0), ticket_type("VIP", 100)];
        let waiting: HashSet<Uuid> = [types[1].id].into();
        let state = SaleState {
            set_aside: 3,
            waiting_types: &waiting,
            ..sale(5, &types, &[])
        };
        let vip = order(&[(Some(types[1].id), 1)], "a");
        let results = decide(state, &HashMap::new(), [&vip, &ask(3, "b"), &ask(2, "c")]);
        assert_eq!(codes(&results), ["sold_out", "insufficient", "ok"]);
    }

    fn sale<'a>(available: i32, types: &'a [TicketType], quotas: &'a [Quota]) -> SaleState<'a> {
        SaleState {
            now: NOW,
            event_sales: SalesWindow::default(),
            available,
            set_aside: 0,
            cap: None,
            types,
            quotas,
            waiting_types: &NO_LINE,
        }
    }

    fn codes(results: &[Result<Grant, Rejection>]) -> Vec<&'static str> {
        results
            .iter()
            .map(|r| match r {
                Ok(_) => "ok",
                Err(Rejection::Refused(Refusal::TicketsSoldOut { .. })) => "sold_out",
                Err(Rejection::Refused(Refusal::InsufficientTickets { .. })) => "insufficient",
                Err(Rejection::Refused(Refusal::FingerprintLimit { .. })) => "limit",
                Err(Rejection::Refused(Refusal::SalesClosed { .. })) => "closed",
                Err(Rejection::Invalid(_)) => "invalid",
                Err(_) => "other",
            })
            .collect()
    }

    #[test]
    fn a_line_of_an_inactive_default_type_asks_for_a_type_and_a_named_one_is_blamed() {
        let mut types = [ticket_type("General admission", 0), ticket_type("VIP", 100)];
        types.iter_mut().for_each(|t| t.active = false);
        let named = order(&[(Some(types[1].id), 1)], "a");
        let results = decide(
            sale(5, &types, &[]),
            &HashMap::new(),
            [&ask(1, "b"), &named],
        );
        let messages: Vec<(String, String)> = results
            .iter()
            .map(|r| match r {
                Err(Rejection::Invalid(error)) => (error.field.clone(), error.message.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "lines[0].ticketTypeId".to_owned(),
                    "is required: the event's default ticket type is not on sale".to_owned()
                ),
                (
                    "lines[0].ticketTypeId".to_owned(),
                    "names a ticket type that is not active".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn grants_in_arrival_order_while_stock_lasts() {
        let types = [ticket_type("General admission", 0)];
        let asks = [
            ask(2, "a"),
            ask(2, "b"),
            ask(2, "c"),
            ask(1, "d"),
            ask(1, "e"),
        ];
        let results = decide(sale(5, &types, &[]), &HashMap::new(), &asks);
        assert_eq!(
            codes(&results),
            ["ok", "ok", "insufficient", "ok", "sold_out"]
        );
        assert!(matches!(
            results[2],
            Err(Rejection::Refused(Refusal::InsufficientTickets {
                available: 1,
                ..
            }))
        ));
    }

    #[test]
    fn cap_counts_held_tickets_and_earlier_grants_in_the_batch() {
        let types = [ticket_type("General admission", 0)];
        let mut held = HashMap::new();
        held.insert(buyer("a").as_str().to_owned(), 1);
        let asks = [ask(1, "a"), ask(1, "a"), ask(2, "b"), ask(1, "b")];
        let results = decide(
            SaleState {
                cap: Some(2),
                ..sale(100, &types, &[])
            },
            &held,
            &asks,
        );
        assert_eq!(codes(&results), ["ok", "limit", "ok", "limit"]);
        assert!(matches!(
            results[1],
            Err(Rejection::Refused(Refusal::FingerprintLimit {
                limit: 2,
                held: 2
            }))
        ));
    }

    #[test]
    fn nothing_left_means_sold_out_for_everyone() {
        let types = [ticket_type("General admission", 0)];
        let results = decide(
            sale(0, &types, &[]),
            &HashMap::new(),
            &[ask(1, "a"), ask(3, "b")],
        );
        assert_eq!(codes(&results), ["sold_out", "sold_out"]);
    }

    #[test]
    fn an_order_gets_all_its_lines_priced_or_nothing() {
        let types = [
            ticket_type("General admission", 0),
            ticket_type("A", 1_250),
            ticket_type("B", 999),
        ];
        let q = [quota(3, &[&types[1], &types[2]])];
        let (a, b) = (Some(types[1].id), Some(types[2].id));
        let asks = [
            order(&[(a, 2), (b, 1)], "x"),
            // Each line alone would fit the event, but the quota has nothing left for both.
            order(&[(a, 1)], "y"),
            order(&[(None, 4)], "z"),
        ];
        let results = decide(sale(10, &types, &q), &HashMap::new(), &asks);
        assert_eq!(codes(&results), ["ok", "sold_out", "ok"]);
        let grant = results[0].as_ref().expect("granted");
        assert_eq!((grant.quantity, grant.total), (3, 2 * 1_250 + 999));
        assert_eq!(grant.lines[0].unit_price, 1_250);

        // One short line refuses the whole order, and takes nothing from the others.
        let q = [quota(2, &[&types[1]]), quota(5, &[&types[1], &types[2]])];
        let asks = [order(&[(a, 2), (b, 4)], "x"), order(&[(b, 5)], "y")];
        let results = decide(sale(10, &types, &q), &HashMap::new(), &asks);
        assert_eq!(codes(&results), ["insufficient", "ok"]);
        match &results[0] {
            Err(Rejection::Refused(Refusal::InsufficientTickets { available, lines })) => {
                assert_eq!(
                    lines.iter().map(|l| l.available).collect::<Vec<_>>(),
                    [2, 5]
                );
                // Both types draw on the quota of 5: the order could get 5, not 2 + 5.
                assert_eq!(*available, 5);
            }
            other => panic!("{other:?}"),
        }

        // Two types sharing a quota of 1: one ticket between them, though each alone has 1.
        let q = [quota(1, &[&types[1], &types[2]])];
        let results = decide(
            sale(10, &types, &q),
            &HashMap::new(),
            &[order(&[(a, 1), (b, 1)], "x")],
        );
        match &results[0] {
            Err(Rejection::Refused(Refusal::InsufficientTickets { available, lines })) => {
                assert_eq!(
                    lines.iter().map(|l| l.available).collect::<Vec<_>>(),
                    [1, 1]
                );
                assert_eq!(*available, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_inactive_and_oversized_lines_are_invalid_by_field() {
        let mut types = [
            ticket_type("General admission", 0),
            ticket_type("A", 1),
            ticket_type("B", 1),
        ];
        types[1].active = false;
        types[2].max_per_order = Some(2);
        let (a, b) = (Some(types[1].id), Some(types[2].id));
        let asks = [
            order(&[(None, 1), (Some(Uuid::nil()), 1)], "x"),
            order(&[(a, 1)], "x"),
            order(&[(b, 3)], "x"),
            order(&[(b, 2)], "x"),
        ];
        let results = decide(sale(10, &types, &[]), &HashMap::new(), &asks);
        let fields: Vec<_> = results
            .iter()
            .map(|r| match r {
                Err(Rejection::Invalid(e)) => e.field.as_str(),
                Ok(_) => "ok",
                Err(_) => "other",
            })
            .collect();
        assert_eq!(
            fields,
            [
                "lines[1].ticketTypeId",
                "lines[0].ticketTypeId",
                "lines[0].quantity",
                "ok"
            ]
        );
    }

    #[test]
    fn sales_windows_close_by_event_or_type_at_their_edges() {
        let mut types = [ticket_type("General admission", 0), ticket_type("Early", 1)];
        types[1].sales.end = Some(NOW);
        let early = Some(types[1].id);
        let results = decide(
            sale(10, &types, &[]),
            &HashMap::new(),
            &[ask(1, "x"), order(&[(early, 1)], "x")],
        );
        assert_eq!(codes(&results), ["ok", "closed"]);
        types[1].sales.end = Some(NOW + time::Duration::microseconds(1));
        let opening = SalesWindow {
            start: Some(NOW),
            end: None,
        };
        let results = decide(
            SaleState {
                event_sales: opening,
                ..sale(10, &types, &[])
            },
            &HashMap::new(),
            &[order(&[(early, 1)], "x")],
        );
        assert_eq!(codes(&results), ["ok"]);
        let later = SalesWindow {
            start: Some(NOW + time::Duration::microseconds(1)),
            end: None,
        };
        let results = decide(
            SaleState {
                event_sales: later,
                ..sale(10, &types, &[])
            },
            &HashMap::new(),
            &[ask(1, "x")],
        );
        assert!(matches!(
            &results[0],
            Err(Rejection::Refused(Refusal::SalesClosed { sales_start_at: Some(start), .. }))
                if *start == NOW + time::Duration::microseconds(1)
        ));
    }
}
