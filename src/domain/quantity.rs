//! How many tickets one request asks for.

/// A number of tickets one request may ask for: 1 to the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    /// `value` as asked for, checked against 1 to `max`; the error says why, for the
    /// `quantity` field.
    pub fn parse(value: Option<i64>, max: i32) -> Result<Self, String> {
        match value {
            None => Err("is required".into()),
            Some(n) if n >= 1 && n <= i64::from(max) => Ok(Self(n as i32)),
            Some(_) => Err(format!("must be between 1 and {max}")),
        }
    }

    /// The number of tickets, for arithmetic and the SQL bind.
    pub const fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_bounds() {
        assert_eq!(Quantity::parse(Some(1), 10).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(Some(10), 10).map(Quantity::get), Ok(10));
        assert!(Quantity::parse(Some(0), 10).is_err());
        assert!(Quantity::parse(Some(11), 10).is_err());
        assert!(Quantity::parse(None, 10).is_err());
    }
}
