//! Money: ISO 4217 currencies and prices, always integers in the currency's minor unit
//! (cents for EUR, yen for JPY), never floats.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Serialize;

/// Highest price of one ticket, in minor units (10,000,000.00 EUR; 1,000,000,000 JPY). An
/// event has at most 1,000,000 tickets, so any order's total, and one full sale of an event,
/// stay at or below 10^15: inside `i64` with room to spare, and inside the integers a
/// JavaScript number holds exactly (2^53 ≈ 9.007 × 10^15), so the web page can add amounts
/// without rounding. Sums over an event's whole history (gross, refunded) count a refunded
/// ticket again each time it is sold, so they grow by up to 10^15 per full sale and refund:
/// they stay within `i64` (about 9,200 such rounds), and exact in JavaScript for about nine.
/// The `*_price_range` constraints hold the database to the same bound.
pub const PRICE_MAX: i64 = 1_000_000_000;

// The bound keeps the largest possible sale of an event (1,000,000 tickets) exact in a
// JavaScript number.
const _: () = assert!(PRICE_MAX * 1_000_000 < 1 << 53);

/// A currency of the ISO 4217 list, by its three-letter code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The three upper-case letters, as stored and answered ("EUR").
    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits of the minor unit: 2 for EUR, 0 for JPY, 3 for KWD; 0 for codes with no minor
    /// unit defined (gold, SDR, "no currency").
    pub fn minor_unit_digits(self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }

    /// The English name in the ISO 4217 list ("Euro", "Hungarian forint").
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Every currency events may be priced in, sorted by code: exactly the codes
    /// [`Currency::for_sale`] accepts. `GET /currencies` answers it, so that clients count
    /// minor units as the server does (browsers' CLDR data disagrees with ISO 4217 for some
    /// twenty currencies).
    pub fn all() -> &'static [Currency] {
        static ALL: LazyLock<Vec<Currency>> = LazyLock::new(|| {
            // Each currency of the list has a numeric code of its own, from 0 to 999.
            let mut all: Vec<Currency> = (0..1000)
                .filter_map(iso_currency::Currency::from_numeric)
                .map(Currency)
                .filter(|currency| currency.is_for_sale())
                .collect();
            all.sort_by_key(|currency| currency.code());
            all
        });
        &ALL
    }
}

impl Currency {
    /// A currency a client may price an event in: the code (upper case) of a currency in
    /// circulation. Refused besides what [`FromStr`] refuses: the list's special codes (XXX
    /// "no currency", XTS for testing, the metals XAU, XAG, XPT, XPD, and units of account
    /// such as XDR), its funds (BOV, CLF, USN…) and superseded codes (HRK, VES…). A code
    /// stored before this rule is still read with [`FromStr`].
    pub fn for_sale(code: &str) -> Result<Self, String> {
        const REFUSED: &str = "must be the ISO 4217 code of a currency in circulation, e.g. EUR \
                               (not XXX, XTS, a metal, a fund or a superseded code)";
        let currency: Self = code.parse()?;
        if currency.is_for_sale() {
            Ok(currency)
        } else {
            Err(REFUSED.to_owned())
        }
    }

    /// Money people pay with: not one of the list's special codes, funds or superseded
    /// codes.
    fn is_for_sale(self) -> bool {
        !self.0.is_special() && !self.0.is_fund() && self.0.is_superseded().is_none()
    }
}

impl FromStr for Currency {
    type Err = String;

    /// Exactly a code of the ISO 4217 list, upper case ("EUR"; "eur" and "EURO" are refused):
    /// how a stored code is read. A client's code is checked with [`Currency::for_sale`].
    fn from_str(code: &str) -> Result<Self, String> {
        iso_currency::Currency::from_code(code)
            .map(Self)
            .ok_or_else(|| "must be an ISO 4217 currency code, e.g. EUR".to_owned())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// A price as a client gave it, checked: 0 (free) to [`PRICE_MAX`] minor units. The error
/// says why, for the field that carried it.
pub fn parse_price(value: i64) -> Result<i64, String> {
    if (0..=PRICE_MAX).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "must be an integer from 0 to {PRICE_MAX}, in the currency's minor unit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_the_iso_list_in_upper_case() {
        let eur: Currency = "EUR".parse().expect("EUR is ISO 4217");
        assert_eq!(eur.code(), "EUR");
        assert_eq!(eur.minor_unit_digits(), 2);
        assert_eq!(
            "JPY".parse::<Currency>().map(|c| c.minor_unit_digits()),
            Ok(0)
        );
        assert_eq!(
            "KWD".parse::<Currency>().map(|c| c.minor_unit_digits()),
            Ok(3)
        );
        for invalid in ["eur", "EURO", "XYZ", "", "E", "€"] {
            assert!(invalid.parse::<Currency>().is_err(), "{invalid}");
        }
    }

    #[test]
    fn the_table_is_every_accepted_code_once_in_order() {
        let listed: Vec<&str> = Currency::all().iter().map(|c| c.code()).collect();
        assert!(
            listed.windows(2).all(|pair| pair[0] < pair[1]),
            "{listed:?}"
        );
        // Every code a client could send that is three capital letters: accepted exactly when
        // listed (anything else is refused by its shape, as the first test shows).
        let letters = b'A'..=b'Z';
        let mut accepted = Vec::new();
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = String::from_utf8(vec![a, b, c]).expect("ASCII");
                    if Currency::for_sale(&code).is_ok() {
                        accepted.push(code);
                    }
                }
            }
        }
        assert_eq!(accepted, listed);
        let digits = |code: &str| {
            let currency: Currency = code.parse().expect("listed");
            (currency.minor_unit_digits(), currency.name().to_owned())
        };
        // ISO 4217's digits, where browsers' CLDR data says 0 (HUF, IDR, IQD) or 2 (XAU).
        assert_eq!(digits("HUF"), (2, "Hungarian forint".to_owned()));
        assert_eq!(digits("IDR").0, 2);
        assert_eq!(digits("IQD").0, 3);
        assert_eq!(digits("EUR"), (2, "Euro".to_owned()));
    }

    /// Codes of the list that are not money people pay with are refused for new events, yet
    /// still read when stored (an event made before the rule keeps its currency).
    #[test]
    fn only_currencies_in_circulation_are_for_sale() {
        for code in [
            "XXX", "XTS", "XAU", "XAG", "XDR", "BOV", "CLF", "USN", "HRK", "VES",
        ] {
            assert!(Currency::for_sale(code).is_err(), "{code}");
            assert!(code.parse::<Currency>().is_ok(), "{code} is still read");
        }
        for code in ["EUR", "USD", "JPY", "KWD", "HUF", "VED", "CHF", "GBP"] {
            assert_eq!(Currency::for_sale(code).map(|c| c.code()), Ok(code));
        }
    }

    #[test]
    fn prices_are_bounded_minor_units() {
        assert_eq!(parse_price(0), Ok(0));
        assert_eq!(parse_price(PRICE_MAX), Ok(PRICE_MAX));
        assert!(parse_price(-1).is_err());
        assert!(parse_price(PRICE_MAX + 1).is_err());
    }
}
