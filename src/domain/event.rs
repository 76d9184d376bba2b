//! Events: the validated input that creates one, and the stored record.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use super::event_name::{is_blank, normalize_name};

use super::catalogue::SalesWindow;
use super::money::{Currency, parse_price};
use super::patch::{Patch, nullable, required};
use super::refusal::FieldError;

/// Longest event name, in characters (Unicode scalar values) after normalization.
pub const NAME_MAX_CHARS: usize = 200;
pub const TOTAL_TICKETS_MAX: i64 = 1_000_000;
/// Earliest event date accepted, in Unix seconds (1970-01-01T00:00:00Z).
pub const DATE_MIN_UNIX: i64 = 0;
/// Latest event date accepted, in Unix seconds (9999-12-31T23:59:59Z; any fraction of that
/// second is accepted too). The window keeps every date storable (PostgreSQL stores
/// microseconds) and renderable as RFC 3339, whose years have four digits; the
/// `events_date_window` constraint holds the database to the same window.
pub const DATE_MAX_UNIX: i64 = 253_402_300_799;

/// Whether `date` lies in the accepted window once converted to UTC. Compares instants, so it
/// cannot fail for any offset, even one that moves the date past year 9999.
fn in_date_window(date: OffsetDateTime) -> bool {
    (DATE_MIN_UNIX..=DATE_MAX_UNIX).contains(&date.unix_timestamp())
}

/// The instant in UTC, truncated to the microsecond as PostgreSQL stores it, so the value
/// answered is the value kept, and every timestamp the API renders has the one shape
/// docs/api.md gives (`Z`, at most six fractional digits). Call only for a date inside the
/// window.
pub fn to_stored_precision(date: OffsetDateTime) -> OffsetDateTime {
    let utc = date.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(utc.nanosecond() / 1_000 * 1_000)
        .unwrap_or(utc)
}

/// The fields of an event as a client gave them, before any check: each may be missing, so
/// that every problem can be reported against its field (named as the API names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDraft {
    pub name: Option<String>,
    pub date: Option<String>,
    pub total_tickets: Option<i64>,
    pub max_tickets_per_fingerprint: Option<i64>,
    /// ISO 4217 code; absent means the server's default currency.
    pub currency: Option<String>,
    /// Price of the default ticket type, in minor units; absent means free.
    pub price: Option<i64>,
    pub sales_start_at: Option<String>,
    pub sales_end_at: Option<String>,
}

/// A date-time as the API takes it (RFC 3339 with an offset, inside the accepted window),
/// converted to UTC at the precision PostgreSQL stores; the error says why, for the field.
pub fn parse_date_time(text: &str) -> Result<OffsetDateTime, String> {
    match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(date) if in_date_window(date) => Ok(to_stored_precision(date)),
        Ok(_) => Err(
            "must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z \
                      once converted to UTC"
                .into(),
        ),
        Err(_) => {
            Err("must be an RFC 3339 date-time with an offset, e.g. 2027-09-01T18:00:00Z".into())
        }
    }
}

/// A sales window from its two optional ends (named `salesStartAt` and `salesEndAt`),
/// pushing a problem per field onto `errors`: each end must parse, and the end must come
/// after the start.
pub fn parse_sales_window(
    start: Option<&str>,
    end: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> SalesWindow {
    let mut parse = |field: &str, text: Option<&str>| {
        text.and_then(|text| {
            parse_date_time(text)
                .map_err(|message| errors.push(FieldError::new(field, message)))
                .ok()
        })
    };
    let window = SalesWindow {
        start: parse("salesStartAt", start),
        end: parse("salesEndAt", end),
    };
    if let (Some(start), Some(end)) = (window.start, window.end)
        && end <= start
    {
        errors.push(FieldError::new("salesEndAt", "must be after salesStartAt"));
    }
    window
}

/// A name as the API takes it for an event, a ticket type or a quota: normalized (see
/// `normalize_name`), with a visible character, at most [`NAME_MAX_CHARS`] characters and no
/// control character; the error says why.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = normalize_name(raw);
    if is_blank(&name) {
        Err("must not be blank".into())
    } else if name.chars().count() > NAME_MAX_CHARS {
        Err(format!("must be at most {NAME_MAX_CHARS} characters"))
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(name)
    }
}

/// An event that is valid to create: it exists only if every rule holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub name: String,
    pub date: OffsetDateTime,
    pub total_tickets: i32,
    pub max_tickets_per_fingerprint: Option<i32>,
    pub currency: Currency,
    /// Price of the default ticket type, in minor units.
    pub price: i64,
    pub sales: SalesWindow,
}

impl NewEvent {
    /// Checks every field and reports all problems at once; `default_currency` is the
    /// event's currency when the request names none.
    pub fn parse(request: EventDraft, default_currency: Currency) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();

        let name = match request.name.as_deref().map(parse_name) {
            None => {
                errors.push(FieldError::new("name", "is required"));
                None
            }
            Some(name) => name
                .map_err(|message| errors.push(FieldError::new("name", message)))
                .ok(),
        };

        let date = match request.date.as_deref() {
            None => {
                errors.push(FieldError::new("date", "is required"));
                None
            }
            Some(text) => parse_date_time(text)
                .map_err(|message| errors.push(FieldError::new("date", message)))
                .ok(),
        };

        let total_tickets = match request.total_tickets {
            None => {
                errors.push(FieldError::new("totalTickets", "is required"));
                None
            }
            Some(n) if (1..=TOTAL_TICKETS_MAX).contains(&n) => Some(n as i32),
            Some(_) => {
                errors.push(FieldError::new(
                    "totalTickets",
                    format!("must be between 1 and {TOTAL_TICKETS_MAX}"),
                ));
                None
            }
        };

        let cap = match (request.max_tickets_per_fingerprint, total_tickets) {
            (None, _) => None,
            (Some(cap), Some(total)) if cap >= 1 && cap <= i64::from(total) => Some(cap as i32),
            (Some(cap), _) if cap >= 1 && total_tickets.is_none() => None,
            (Some(_), _) => {
                errors.push(FieldError::new(
                    "maxTicketsPerFingerprint",
                    "must be between 1 and totalTickets, or null for no cap",
                ));
                None
            }
        };

        let currency = match request.currency.as_deref() {
            None => Some(default_currency),
            Some(code) => Currency::for_sale(code)
                .map_err(|message| errors.push(FieldError::new("currency", message)))
                .ok(),
        };
        let price = parse_price(request.price.unwrap_or(0))
            .map_err(|message| errors.push(FieldError::new("price", message)))
            .ok();
        let sales = parse_sales_window(
            request.sales_start_at.as_deref(),
            request.sales_end_at.as_deref(),
            &mut errors,
        );

        match (name, date, total_tickets, currency, price) {
            (Some(name), Some(date), Some(total_tickets), Some(currency), Some(price))
                if errors.is_empty() =>
            {
                Ok(Self {
                    name,
                    date,
                    total_tickets,
                    max_tickets_per_fingerprint: cap,
                    currency,
                    price,
                    sales,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A stored event with its live counts. available + reserved + purchased = total always.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub date: OffsetDateTime,
    pub total_tickets: i32,
    pub available_tickets: i32,
    /// Tickets held by reservations, including those whose payment is in progress.
    pub reserved_tickets: i32,
    pub purchased_tickets: i32,
    /// Entries waiting on the event's waiting list, over all its types.
    pub waiting_list_length: i32,
    /// Of `availableTickets`, those set aside for the head of a waiting list that waits for
    /// more than came back (strict order: they are sold to nobody else).
    pub set_aside_tickets: i32,
    /// The change sequence of the organiser's latest change to the event or its catalogue (0:
    /// none), as the live statistics stream's messages carry it: a client that read the
    /// event and then hears a higher one on the stream knows to read it again.
    pub organiser_change_seq: u64,
    pub max_tickets_per_fingerprint: Option<i32>,
    /// ISO 4217 code of every price and amount of the event.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// When sales open (absent: open from creation); each type may narrow it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_start_at: Option<OffsetDateTime>,
    /// When sales close, exclusive (absent: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub sales_end_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The fields of an event an organiser may change (`PATCH /events/{id}`), as they will be
/// stored: each checked as `POST /events` checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    pub name: String,
    pub date: OffsetDateTime,
    pub total_tickets: i32,
    pub max_tickets_per_fingerprint: Option<i32>,
    pub sales: SalesWindow,
    /// Never changes: every amount of the event is counted in it. A patch may name it only
    /// as it is (a client that sends back what it read).
    pub currency: Currency,
}

/// A `PATCH /events/{id}` body as the client gave it: each field absent, null or a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPatch {
    pub name: Patch<String>,
    pub date: Patch<String>,
    pub total_tickets: Patch<i64>,
    pub max_tickets_per_fingerprint: Patch<i64>,
    pub sales_start_at: Patch<String>,
    pub sales_end_at: Patch<String>,
    /// Refused unless it is the event's own code: a change would silently do nothing.
    pub currency: Patch<String>,
    /// Whether the body named `price`, which `POST /events` takes for the default type but
    /// an event does not have: refused, where ignoring it would answer 200 for no change.
    pub price_given: bool,
}

impl EventSettings {
    /// The settings of a stored event.
    pub fn of(event: &Event) -> Self {
        Self {
            name: event.name.clone(),
            date: event.date,
            total_tickets: event.total_tickets,
            max_tickets_per_fingerprint: event.max_tickets_per_fingerprint,
            sales: SalesWindow {
                start: event.sales_start_at,
                end: event.sales_end_at,
            },
            currency: event.currency,
        }
    }

    /// These settings changed by `patch`, every rule checked against the result (the cap
    /// against the new total, the window's end against its new start); all problems at once.
    pub fn apply(&self, patch: EventPatch) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = required(
            "name",
            patch.name,
            Some(self.name.clone()),
            |raw| parse_name(&raw),
            &mut errors,
        );
        let date = required(
            "date",
            patch.date,
            Some(self.date),
            |raw| parse_date_time(&raw),
            &mut errors,
        );
        let total_tickets = required(
            "totalTickets",
            patch.total_tickets,
            Some(self.total_tickets),
            |n| {
                if (1..=TOTAL_TICKETS_MAX).contains(&n) {
                    Ok(n as i32)
                } else {
                    Err(format!("must be between 1 and {TOTAL_TICKETS_MAX}"))
                }
            },
            &mut errors,
        );
        let cap = nullable(
            "maxTicketsPerFingerprint",
            patch.max_tickets_per_fingerprint,
            self.max_tickets_per_fingerprint.map(i64::from),
            Ok,
            &mut errors,
        );
        let cap = match (cap, total_tickets) {
            (None, _) => None,
            (Some(cap), Some(total)) if cap >= 1 && cap <= i64::from(total) => Some(cap as i32),
            // The total is refused already; the cap cannot be judged against it.
            (Some(cap), None) if cap >= 1 => None,
            (Some(_), _) => {
                errors.push(FieldError::new(
                    "maxTicketsPerFingerprint",
                    "must be between 1 and totalTickets, or null for no cap",
                ));
                None
            }
        };
        let sales = self
            .sales
            .patched(patch.sales_start_at, patch.sales_end_at, &mut errors);
        if let Some(currency) = patch.currency
            && currency.as_deref() != Some(self.currency.code())
        {
            errors.push(FieldError::new(
                "currency",
                format!(
                    "cannot change once the event is made (it is {}); make a new event to sell in another currency",
                    self.currency
                ),
            ));
        }
        if patch.price_given {
            errors.push(FieldError::new(
                "price",
                "an event has no price of its own: change a ticket type's price with PATCH /events/{id}/ticket-types/{typeId}",
            ));
        }
        match (name, date, total_tickets) {
            (Some(name), Some(date), Some(total_tickets)) if errors.is_empty() => Ok(Self {
                name,
                date,
                total_tickets,
                max_tickets_per_fingerprint: cap,
                sales,
                currency: self.currency,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, date: &str, total: i64, cap: Option<i64>) -> EventDraft {
        EventDraft {
            name: Some(name.into()),
            date: Some(date.into()),
            total_tickets: Some(total),
            max_tickets_per_fingerprint: cap,
            ..EventDraft::default()
        }
    }

    fn eur() -> Currency {
        "EUR".parse().expect("EUR is ISO 4217")
    }

    impl NewEvent {
        fn parse_eur(draft: EventDraft) -> Result<Self, Vec<FieldError>> {
            Self::parse(draft, eur())
        }
    }

    #[test]
    fn money_and_sales_window_default_and_are_checked() {
        let event =
            NewEvent::parse_eur(request("a", "2027-01-01T00:00:00Z", 5, None)).expect("valid");
        assert_eq!((event.currency, event.price), (eur(), 0));
        assert_eq!(event.sales, SalesWindow::default());
        let draft = EventDraft {
            currency: Some("JPY".into()),
            price: Some(1500),
            sales_start_at: Some("2027-01-01T10:00:00+01:00".into()),
            sales_end_at: Some("2027-01-02T00:00:00Z".into()),
            ..request("a", "2027-01-01T00:00:00Z", 5, None)
        };
        let event = NewEvent::parse_eur(draft).expect("valid");
        assert_eq!((event.currency.code(), event.price), ("JPY", 1500));
        assert_eq!(event.sales.start.map(|s| s.hour()), Some(9));
        let draft = EventDraft {
            currency: Some("eur".into()),
            price: Some(-1),
            sales_start_at: Some("2027-01-02T00:00:00Z".into()),
            sales_end_at: Some("2027-01-02T00:00:00Z".into()),
            ..request("a", "2027-01-01T00:00:00Z", 5, None)
        };
        assert_eq!(
            fields(NewEvent::parse_eur(draft)),
            ["currency", "price", "salesEndAt"]
        );
        let draft = EventDraft {
            sales_start_at: Some("tomorrow".into()),
            ..request("a", "2027-01-01T00:00:00Z", 5, None)
        };
        assert_eq!(fields(NewEvent::parse_eur(draft)), ["salesStartAt"]);
    }

    #[test]
    fn a_patch_is_checked_against_the_stored_event() {
        let stored = EventSettings {
            name: "Gig".into(),
            date: datetime("2027-01-01T00:00:00Z"),
            total_tickets: 10,
            max_tickets_per_fingerprint: Some(8),
            sales: SalesWindow {
                start: Some(datetime("2026-12-01T00:00:00Z")),
                end: None,
            },
            currency: "EUR".parse().expect("a currency"),
        };
        assert_eq!(stored.apply(EventPatch::default()), Ok(stored.clone()));
        // The currency as it is passes; another, or none, or a price, is refused.
        let same = EventPatch {
            currency: Some(Some("EUR".into())),
            ..EventPatch::default()
        };
        assert_eq!(stored.apply(same), Ok(stored.clone()));
        for currency in [Some("JPY".into()), Some("eur".into()), None] {
            let patch = EventPatch {
                currency: Some(currency),
                price_given: true,
                ..EventPatch::default()
            };
            assert_eq!(fields(stored.apply(patch)), ["currency", "price"]);
        }
        // The stored cap no longer fits a lower total; the new end must follow the stored start.
        let patch = EventPatch {
            total_tickets: Some(Some(5)),
            sales_end_at: Some(Some("2026-11-01T00:00:00Z".into())),
            ..EventPatch::default()
        };
        assert_eq!(
            fields(stored.apply(patch)),
            ["maxTicketsPerFingerprint", "salesEndAt"]
        );
        let patch = EventPatch {
            total_tickets: Some(Some(5)),
            max_tickets_per_fingerprint: Some(None),
            sales_start_at: Some(None),
            ..EventPatch::default()
        };
        let changed = stored.apply(patch).expect("valid");
        assert_eq!(
            (changed.total_tickets, changed.max_tickets_per_fingerprint),
            (5, None)
        );
        assert_eq!(changed.sales, SalesWindow::default());
    }

    fn datetime(text: &str) -> OffsetDateTime {
        parse_date_time(text).expect("a valid date-time")
    }

    fn fields<T: std::fmt::Debug>(result: Result<T, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn accepts_a_valid_event_and_trims_the_name() {
        let event =
            NewEvent::parse_eur(request("  Gig ", "2027-01-02T03:04:05+02:00", 10, Some(2)))
                .expect("valid");
        assert_eq!(event.name, "Gig");
        assert_eq!(event.total_tickets, 10);
        assert_eq!(event.max_tickets_per_fingerprint, Some(2));
        assert_eq!(event.date.unix_timestamp(), 1_798_851_845);
    }

    #[test]
    fn reports_every_missing_field() {
        let errors = fields(NewEvent::parse_eur(EventDraft::default()));
        assert_eq!(errors, ["name", "date", "totalTickets"]);
    }

    #[test]
    fn rejects_out_of_range_values() {
        let long = "x".repeat(NAME_MAX_CHARS + 1);
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                &long,
                "2027-01-01T00:00:00Z",
                1,
                None
            ))),
            ["name"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "   ",
                "2027-01-01T00:00:00Z",
                1,
                None
            ))),
            ["name"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01 00:00",
                1,
                None
            ))),
            ["date"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01T00:00:00",
                1,
                None
            ))),
            ["date"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01T00:00:00Z",
                0,
                None
            ))),
            ["totalTickets"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01T00:00:00Z",
                1_000_001,
                None
            ))),
            ["totalTickets"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01T00:00:00Z",
                5,
                Some(6)
            ))),
            ["maxTicketsPerFingerprint"]
        );
        assert_eq!(
            fields(NewEvent::parse_eur(request(
                "a",
                "2027-01-01T00:00:00Z",
                5,
                Some(0)
            ))),
            ["maxTicketsPerFingerprint"]
        );
    }

    #[test]
    fn accepts_the_boundaries() {
        let long = "é".repeat(NAME_MAX_CHARS);
        assert!(
            NewEvent::parse_eur(request(
                &long,
                "2027-01-01T00:00:00Z",
                1_000_000,
                Some(1_000_000)
            ))
            .is_ok()
        );
        assert!(NewEvent::parse_eur(request("a", "2027-01-01T00:00:00Z", 1, Some(1))).is_ok());
    }

    #[test]
    fn names_are_nfc_without_invisible_edges() {
        let event = NewEvent::parse_eur(request(
            "\u{200b} Cafe\u{301}\u{feff}",
            "2027-01-01T00:00:00Z",
            1,
            None,
        ))
        .expect("valid");
        assert_eq!(event.name, "Caf\u{e9}");
        for blank in ["\u{200b}", "\u{2060} \u{200d}", "\u{3000}"] {
            assert_eq!(
                fields(NewEvent::parse_eur(request(
                    blank,
                    "2027-01-01T00:00:00Z",
                    1,
                    None
                ))),
                ["name"]
            );
        }
    }

    #[test]
    fn dates_outside_the_window_are_refused_and_kept_ones_are_utc_microseconds() {
        for date in [
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59-01:00",
            "0000-01-01T00:30:00+01:00",
        ] {
            assert_eq!(
                fields(NewEvent::parse_eur(request("a", date, 1, None))),
                ["date"]
            );
        }
        let event = NewEvent::parse_eur(request("a", "2027-01-01T01:00:00.1234567+01:00", 1, None))
            .expect("valid");
        assert_eq!(event.date.offset(), UtcOffset::UTC);
        assert_eq!(event.date.nanosecond(), 123_456_000);
        assert_eq!(event.date.hour(), 0);
    }
}
