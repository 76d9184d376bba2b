//! `/currencies`: the currencies events may be priced in, with the digits of each one's minor
//! unit, so that clients (the web page) count amounts as the server does.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::error::{ApiResult, ErrorBody};
use super::response::json;
use crate::domain::money::Currency;

/// One currency of the table.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrencyBody {
    /// The ISO 4217 code, as `POST /events` takes it.
    #[schema(example = "EUR")]
    pub code: &'static str,
    /// Digits of the minor unit every price and amount of an event in this currency is
    /// counted in: 2 (EUR: 1250 is 12.50), 0 (JPY), 3 (KWD), as ISO 4217 has them.
    #[schema(example = 2, minimum = 0)]
    pub digits: u16,
    /// The currency's English name in the ISO 4217 list.
    #[schema(example = "Euro")]
    pub name: &'static str,
}

/// Every currency an event may be priced in, sorted by code, with its minor unit's digits.
#[utoipa::path(
    get, path = "/currencies", tag = "events",
    responses(
        (status = 200, description = "Every accepted currency, sorted by code", body = [CurrencyBody]),
        (status = 500, description = "INTERNAL_ERROR: the table could not be serialized", body = ErrorBody),
    )
)]
pub async fn list_currencies() -> ApiResult<Response> {
    let table: Vec<CurrencyBody> = Currency::all()
        .iter()
        .map(|currency| CurrencyBody {
            code: currency.code(),
            digits: currency.minor_unit_digits(),
            name: currency.name(),
        })
        .collect();
    json(StatusCode::OK, &table)
}
