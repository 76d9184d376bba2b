//! The confirmation code a buyer shows at the door.

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
}
