//! The built-in detectors: a pattern for each value's documented shape, and a check where one
//! exists, so that random characters of the same shape are left alone.
//!
//! Patterns use `(?-u:\b)` (an ASCII word boundary) rather than `\b`: the DFA that decides what
//! to hold back is exact for it, and the values are ASCII.

use crate::validate;

/// A check a match must pass.
pub type Check = fn(&str) -> bool;

/// Every built-in detector's name, in the order their matches win when two start at one place.
pub const BUILTIN: [&str; 10] =
    ["private-key", "jwt", "api-key", "email", "iban", "card", "ssn", "phone", "ipv6", "ipv4"];

const IPV4_OCTET: &str = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// The pattern and check of built-in detector `name`.
pub fn builtin(name: &str) -> Option<(String, Option<Check>)> {
    let (pattern, check): (String, Option<Check>) = match name {
        "email" => (r"(?-u:\b)[A-Za-z0-9_][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,6}\.[A-Za-z]{2,24}".into(), None),
        "card" => (r"(?-u:\b)[0-9](?:[ \-]?[0-9]){11,18}(?-u:\b)".into(), Some(validate::luhn)),
        "iban" => (r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)".into(), Some(validate::iban)),
        "ssn" => (r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)".into(), Some(validate::ssn)),
        "phone" => (PHONE.into(), Some(validate::phone)),
        "ipv4" => (format!(r"(?-u:\b)(?:{IPV4_OCTET}\.){{3}}{IPV4_OCTET}(?-u:\b)"), None),
        "ipv6" => (r"(?-u:\b)(?:[0-9A-Fa-f]{1,4}:|:){2,7}[0-9A-Fa-f]{1,4}(?-u:\b)".into(), Some(validate::ipv6)),
        "api-key" => (API_KEY.into(), None),
        "jwt" => (r"(?-u:\b)eyJ[A-Za-z0-9_\-]{5,600}\.eyJ[A-Za-z0-9_\-]{5,1400}\.[A-Za-z0-9_\-]{5,600}(?-u:\b)".into(), None),
        "private-key" => (PRIVATE_KEY.into(), None),
        _ => return None,
    };
    Some((pattern, check))
}

/// International numbers (`+` and a country code, an optional `(0)` or area code in brackets),
/// North American numbers written in groups, and national numbers with a trunk `0` and at least
/// one separator; the check wants 8 to 15 digits.
const PHONE: &str = concat!(
    r"(?:\+[1-9][0-9]{0,2}[ .\-]?(?:\(0?[0-9]{1,4}\)[ .\-]?)?[0-9]{1,4}(?:[ .\-]?[0-9]{2,4}){1,4}",
    r"|\([2-9][0-9]{2}\)[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}",
    r"|(?-u:\b)[2-9][0-9]{2}[ .\-][2-9][0-9]{2}[ .\-][0-9]{4}",
    r"|(?-u:\b)0[1-9][0-9]{0,4}[ \-/][0-9]{2,4}(?:[ \-]?[0-9]{2,4}){0,3})(?-u:\b)",
);

/// Secrets by their documented prefixes: OpenAI (`sk-`, `sk-proj-`, `sk-svcacct-`) and Anthropic
/// (`sk-ant-`) keys, AWS access key ids, GitHub tokens (classic and fine-grained), Slack tokens,
/// Google API keys, Stripe secret and restricted keys.
const API_KEY: &str = concat!(
    r"(?-u:\b)(?:sk-[A-Za-z0-9_\-]{20,200}|(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36}",
    r"|github_pat_[A-Za-z0-9_]{82}|xox[abposr]-[A-Za-z0-9\-]{10,100}|AIza[0-9A-Za-z_\-]{35}",
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{20,100})(?-u:\b)",
);

/// A PEM private key: the header, the base64 body (at most 8,000 characters), and the footer if
/// it came, so a key cut short by the end of a stream is still found.
const PRIVATE_KEY: &str = concat!(
    r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----[A-Za-z0-9+/= \t\r\n]{0,8000}",
    r"(?:-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----)?",
);
