//! The request shapes as they arrive on the wire, with their serde and OpenAPI annotations.
//! Every field is optional text or number, so that each problem can be reported against its
//! field; the handlers turn them into the domain's validated types.

use serde::Deserialize;

use crate::domain::event::EventDraft;

/// The body of `POST /events/{id}/tickets`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRequest {
    /// How many tickets to hold, 1 to the server's per-purchase maximum (default 10).
    #[schema(example = 2, required = true, nullable = false)]
    pub quantity: Option<i64>,
    /// The buyer's device fingerprint, for clients that cannot send the
    /// `X-Device-Fingerprint` header (the header wins when both are present): up to 256
    /// characters, no control characters.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// The body of `POST /tickets/{id}/payment`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    /// A test card token: `tok_visa` (or none) succeeds, `tok_chargeDeclined` is declined.
    #[schema(example = "tok_visa")]
    pub payment_token: Option<String>,
    /// The buyer's device fingerprint, for clients that cannot send the
    /// `X-Device-Fingerprint` header (the header wins when both are present): up to 256
    /// characters, no control characters.
    #[schema(max_length = 256, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub user_fingerprint: Option<String>,
}

/// The body of `POST /events` as it arrives; every field optional so that each problem
/// can be reported against its field.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventRequest {
    /// 1 to 200 characters once normalized (NFC, whitespace runs made one space, invisible
    /// characters around it trimmed); a name with no visible character is refused as blank.
    #[schema(example = "RustConf 2027", required = true, nullable = false)]
    pub name: Option<String>,
    /// RFC 3339 date-time with an offset, from 1970-01-01T00:00:00Z to
    /// 9999-12-31T23:59:59.999999Z once converted to UTC; stored in UTC to the microsecond.
    #[schema(example = "2027-09-01T18:00:00Z", required = true, nullable = false)]
    pub date: Option<String>,
    /// 1 to 1,000,000.
    #[schema(example = 1000, required = true, nullable = false)]
    pub total_tickets: Option<i64>,
    /// 1 to totalTickets, or null for no cap.
    #[schema(example = 4)]
    pub max_tickets_per_fingerprint: Option<i64>,
    /// ISO 4217 code of the event's prices (default: the server's `--default-currency`,
    /// itself EUR by default).
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Price of the default ticket type ("General admission"), an integer in the currency's
    /// minor unit (cents for EUR), 0 (free, the default) to 1,000,000,000.
    #[schema(example = 2500, minimum = 0, maximum = 1_000_000_000)]
    pub price: Option<i64>,
    /// When sales open: RFC 3339 date-time with an offset (absent: at once).
    #[schema(example = "2027-06-01T10:00:00Z")]
    pub sales_start_at: Option<String>,
    /// When sales close, exclusive: RFC 3339, after salesStartAt (absent: never).
    #[schema(example = "2027-09-01T18:00:00Z")]
    pub sales_end_at: Option<String>,
}

/// `?page=&limit=` as it arrives; text so that a bad value is reported by name.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, 1 to 1,000,000,000 (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000)]
    pub page: Option<String>,
    /// Items per page, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
}

impl From<CreateEventRequest> for EventDraft {
    fn from(request: CreateEventRequest) -> Self {
        EventDraft {
            name: request.name,
            date: request.date,
            total_tickets: request.total_tickets,
            max_tickets_per_fingerprint: request.max_tickets_per_fingerprint,
            currency: request.currency,
            price: request.price,
            sales_start_at: request.sales_start_at,
            sales_end_at: request.sales_end_at,
        }
    }
}
