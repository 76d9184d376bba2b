//! The confirmation code a buyer shows at the door.

/// The symbols of a confirmation code after `BX-`: no look-alikes (no 0/O, 1/I/L).
const SYMBOLS: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// A confirmation code as someone typed it to look an order up: `BX-`, four symbols, `-`,
/// four symbols, exactly as [`confirmation_code`] makes them (upper case). One that exists
/// has that shape, so a lookup by it never reads anything for a typo of another shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationCode(String);

impl ConfirmationCode {
    /// Checks `text` as given (no trimming, no case folding); the message says why not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        let symbol = |b: &u8| SYMBOLS.contains(b);
        let shaped = bytes.len() == 12
            && bytes.starts_with(b"BX-")
            && bytes[7] == b'-'
            && bytes[3..7].iter().all(symbol)
            && bytes[8..].iter().all(symbol);
        if shaped {
            Ok(Self(text.to_owned()))
        } else {
            Err(
                "must be a confirmation code: BX-, four characters, -, four characters \
                 (upper-case letters and digits without 0, O, 1, I, L)"
                    .to_owned(),
            )
        }
    }

    /// The code as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which of an event's orders the organiser's list shows: every one, or those with one
/// confirmation code, or in one status, or both. Built only from parsed values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only the order with this code (at most one: codes are unique).
    pub confirmation_code: Option<ConfirmationCode>,
    /// Only orders in this status.
    pub status: Option<crate::domain::status::AllocationStatus>,
}

/// A short code a person can read out: `BX-` and two groups of four characters from an
/// alphabet without look-alikes (no 0/O, 1/I/L).
pub fn confirmation_code(random: [u8; 8]) -> String {
    const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ-";
    let mut code = String::from("BX-");
    for (i, byte) in random.iter().enumerate() {
        if i == 4 {
            code.push('-');
        }
        // 31 usable symbols: the last alphabet entry is the separator.
        code.push(ALPHABET[usize::from(*byte) % 31] as char);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_codes_are_readable() {
        let code = confirmation_code([0, 1, 2, 3, 250, 251, 252, 255]);
        assert_eq!(code.len(), 12);
        assert!(code.starts_with("BX-"));
        assert_eq!(code.as_bytes()[7], b'-');
        assert!(!code[3..].contains(['0', 'O', '1', 'I', 'L']));
    }

    #[test]
    fn made_codes_parse_and_others_do_not() {
        for seed in 0..=255u8 {
            let code = confirmation_code([seed, seed.wrapping_mul(7), 3, 4, 5, 6, 7, seed]);
            assert_eq!(ConfirmationCode::parse(&code).unwrap().as_str(), code);
        }
        for bad in [
            "",
            "BX-",
            "bx-ABCD-EFGH",
            "BX-ABCD-EFG",
            "BX-ABCD-EFGHJ",
            "BX-ABCD_EFGH",
            "BX-AB0D-EFGH",
            "BX-ABCD-EFGI",
            " BX-ABCD-EFGH",
            "BX-ABCD-EFGH ",
            "BX-ÄBCD-EFGH",
        ] {
            assert!(ConfirmationCode::parse(bad).is_err(), "{bad:?}");
        }
    }
}
