//! Checks that tell a value from random characters of the same shape: a card number's Luhn digit,
//! an IBAN's mod-97 remainder, the number ranges SSNs are never issued in, a phone number's
//! length, an IPv6 address's grammar.

/// True if the digits of `text` (spaces and dashes ignored) pass the Luhn check.
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 12 || text.chars().any(|c| !c.is_ascii_digit() && c != ' ' && c != '-') {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

/// True if `text` (spaces ignored) is an IBAN whose check digits hold (ISO 13616: the country and
/// check digits moved to the end, letters as numbers 10-35, the whole mod 97 is 1).
pub fn iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) || !compact.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (head, rest) = compact.split_at(4);
    let mut remainder = 0u32;
    for &b in rest.iter().chain(head) {
        let value = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// True unless `text` (`AAA-GG-SSSS`) is in a range never issued: area 000, 666 or 9xx,
/// group 00, serial 0000.
pub fn ssn(text: &str) -> bool {
    let (area, group, serial) = (&text[..3], &text[4..6], &text[7..]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// True if `text` has 8 to 15 digits (E.164 allows 15) and not all of them the same.
pub fn phone(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    (8..=15).contains(&digits.len()) && digits.iter().any(|d| *d != digits[0])
}

/// True if `text` is an IPv6 address with a digit in it (so that `add::cafe`, a path in some
/// programming language, is not one).
pub fn ipv6(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit()) && text.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_pass_luhn_and_random_digits_do_not() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234 5678 9012 3456"));
        assert!(!luhn("4111"), "too short to be a card");
    }

    #[test]
    fn ibans_pass_mod_97_and_typos_do_not() {
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(iban("DE89370400440532013000"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("DE89370400440532013001"));
        assert!(!iban("XX00"));
    }

    #[test]
    fn unissued_ssns_phone_lengths_and_ipv6_grammar() {
        assert!(ssn("123-45-6789") && !ssn("000-12-3456") && !ssn("666-12-3456") && !ssn("912-12-3456"));
        assert!(!ssn("123-00-6789") && !ssn("123-45-0000"));
        assert!(phone("+44 20 7946 0958") && phone("(555) 234-5678"));
        assert!(!phone("+1 2345") && !phone("0000 0000") && !phone("+1234567890123456"));
        assert!(ipv6("2001:db8::ff00:42:8329") && ipv6("fe80::1"));
        assert!(!ipv6("add::cafe") && !ipv6("12:30:45") && !ipv6("1::2::3"));
    }
}
