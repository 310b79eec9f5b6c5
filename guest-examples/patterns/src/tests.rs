use super::*;
use proptest::prelude::*;

/// Every built-in detector, masking (built once: the DFA takes a while).
fn all() -> &'static Patterns {
    static ALL: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        Patterns::new(BUILTIN.iter().map(|n| Detector::builtin(n, Action::Mask).unwrap()).collect()).unwrap()
    })
}

/// `pieces` through `p` as one channel, then closed: the client's text.
fn streamed(p: &Patterns, pieces: &[&str]) -> (String, usize) {
    let (mut pending, mut out, mut most, mut before) = (String::new(), String::new(), 0, None);
    for (i, piece) in pieces.iter().enumerate() {
        pending.push_str(piece);
        let last = i + 1 == pieces.len();
        match p.step(&mut before, &pending, last, &mut out) {
            Flow::Continue(n) => {
                pending.drain(..n);
                most = most.max(pending.len());
            }
            Flow::Stop(_) => return (out, most),
        }
    }
    (out, most)
}

#[test]
fn each_detector_finds_its_values_and_leaves_look_alikes() {
    let p = all();
    let cases = [
        ("mail ann.lee+x@mail.example.org now", "mail [email] now"),
        ("card 4111 1111 1111 1111 ok", "card [card] ok"),
        ("card 4111 1111 1111 1112 ok", "card 4111 1111 1111 1112 ok"),
        ("iban GB82 WEST 1234 5698 7654 32.", "iban [iban]."),
        ("iban GB82 WEST 1234 5698 7654 33.", "iban GB82 WEST 1234 5698 7654 33."),
        ("ssn 123-45-6789 and 000-12-3456", "ssn [ssn] and 000-12-3456"),
        ("host 192.168.1.20 not 999.1.1.1", "host [ipv4] not 999.1.1.1"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx1234 end", "key [api-key] end"),
        ("key AKIAABCDEFGHIJKLMNOP end", "key [api-key] end"),
        ("tok eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4f ok", "tok [jwt] ok"),
        ("call +44 20 7946 0958 or (555) 234-5678.", "call [phone] or [phone]."),
        ("ruf +49 (0)30 1234 5678 an, oder 030 12345678", "ruf [phone] an, oder [phone]"),
        ("us 555-234-5678 not 555-234-567 nor 2024-01-15", "us [phone] not 555-234-567 nor 2024-01-15"),
        (
            "v6 2001:db8::ff00:42:8329 and fe80::1, not add::cafe or 12:30:45",
            "v6 [ipv6] and [ipv6], not add::cafe or 12:30:45",
        ),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 x", "gh [api-key] x"),
        ("slack xoxb-1234567890-abcdefghij x", "slack [api-key] x"),
        ("g AIzaSyA1234567890abcdefghijklmnopqrstuv x", "g [api-key] x"),
        ("stripe sk_live_abcdefghijklmnopqrst1234 x", "stripe [api-key] x"),
        ("ant sk-ant-api03-abcdefghijklmnopqrstuvwx x", "ant [api-key] x"),
        ("aws AKIAABCDEFGHIJKLMNO x (19: too short)", "aws AKIAABCDEFGHIJKLMNO x (19: too short)"),
        (
            "k -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY----- done",
            "k [private-key] done",
        ),
        ("cut -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "cut [private-key]"),
        ("nothing here: 42 and sk-short", "nothing here: 42 and sk-short"),
        ("no boundary: aaaask-ant-abcdefghijklmnopqrstuvwx", "no boundary: aaaask-ant-abcdefghijklmnopqrstuvwx"),
    ];
    for (text, want) in cases {
        assert_eq!(streamed(p, &[text]).0, want, "{text}");
    }
}

#[test]
fn a_pattern_without_a_longest_match_needs_a_cap() {
    let mut d = Detector::pattern("t", "TCK-[0-9]+", Action::Mask);
    assert!(Patterns::new(vec![d.clone()]).unwrap_err().message.contains("no longest match"));
    d.cap = Some(40);
    let capped = Patterns::new(vec![d]).unwrap();
    assert_eq!(capped.cap(), 44, "`TCK-` and at most 40 digits");
    assert_eq!(streamed(&capped, &["a TCK-12", "34 b"]).0, "a [t] b");
    let bad = Detector::pattern("b", "(", Action::Mask);
    assert_eq!(Patterns::new(vec![bad]).unwrap_err().detector.as_deref(), Some("b"));
    let empty = Detector::pattern("e", "x?", Action::Mask);
    assert!(Patterns::new(vec![empty]).unwrap_err().message.contains("empty"));
}

fn configured(pairs: &[(&str, &str)]) -> Result<Patterns, String> {
    use sluicegate_guest::text::FromConfig;
    Patterns::from_config(&sluicegate_guest::Config::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))))
}

#[test]
fn configuration_keys_set_detectors_actions_and_replacements() {
    let p = configured(&[
        ("detect", "email, card"),
        ("action", "drop"),
        ("action.email", "mask"),
        ("replacement", "<{name} removed>"),
        ("pattern.ticket", "TCK-[0-9]{6}"),
        ("action.ticket", "stop"),
    ])
    .unwrap();
    let names: Vec<&str> = p.detectors().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ticket", "email", "card"], "operator patterns first, then built-ins in their order");
    assert_eq!(streamed(&p, &["a@b.io 4111 1111 1111 1111 +44 20 7946 0958"]).0, "<email removed>  +44 20 7946 0958");
    assert_eq!(streamed(&p, &["before TCK-", "123456 after"]).0, "before ");
    let errors = [
        (vec![("detect", "email, phon")], "`detect`: no built-in detector `phon`"),
        (vec![("pattern.t", "TCK-[0-9]+")], "`pattern.t`: the pattern has no longest match"),
        (vec![("pattern.t", "TCK-(")], "`pattern.t`:"),
        (vec![("actoin.card", "stop")], "`actoin.card`: not a key"),
        (vec![("action.tickets", "stop")], "`action.tickets`: no detector `tickets`"),
        (vec![("action", "block")], "`action`: `block` is not an action"),
        (vec![("pattern.card", "x")], "`pattern.card`: `card` is a built-in"),
        (vec![("cap", "0"), ("pattern.t", "a+")], "`cap`: `0` is not a length"),
        (vec![("detect", "")], "nothing to look for"),
    ];
    for (pairs, want) in errors {
        let got = configured(&pairs).unwrap_err();
        assert!(got.contains(want), "{pairs:?}: {got}");
    }
    let capped = configured(&[("detect", ""), ("pattern.t", "TCK-[0-9]+"), ("cap.t", "10")]).unwrap();
    assert_eq!(capped.cap(), 14);
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z ]{1,6}",
        2 => prop::sample::select(vec![
            "ann@example.com", "4111 1111 1111 1111", "4111111111111112", "GB82 WEST 1234 5698 7654 32",
            "123-45-6789", "10.0.0.1", "sk-ant-abcdefghijklmnopqrstuvwx", "AKIAABCDEFGHIJKLMNOP", " ", "-", ".",
            "\u{e9}", "@", "+44 20 7946 0958", "(555) 234-5678", "fe80::1", "2001:db8::8a2e:370:7334", ":",
            "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADAN\n", "-----END PRIVATE KEY-----", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJ",
        ]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 1..16).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any split of any text: the same output as the whole text, and never more held than the cap.
    #[test]
    fn any_split_gives_the_whole_texts_answer(text in text(), cuts in prop::collection::vec(1usize..7, 1..40)) {
        let p = all();
        let whole = streamed(p, &[&text]).0;
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= text.len() {
                break;
            }
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            pieces.push(&text[at..end]);
            at = end;
        }
        let (split, most) = streamed(p, &pieces);
        prop_assert_eq!(split, whole);
        prop_assert!(most <= p.cap(), "held {} over the cap {}", most, p.cap());
    }
}

/// Text that cannot begin any match is never held: without `email`, plain words are not possible
/// starts (with it, every word could be an address's local part, and is held until it ends).
#[test]
fn nothing_is_held_without_a_possible_match_prefix() {
    let text = "The weather in Paris will stay mild this week, with light rain on Tuesday; pack a jacket!";
    let config = sluicegate_guest::Config::new([(
        "detect".to_string(),
        "private-key, jwt, api-key, iban, card, ssn, phone, ipv6, ipv4".to_string(),
    )]);
    let p = {
        use sluicegate_guest::text::FromConfig;
        Patterns::from_config(&config).unwrap()
    };
    // Word by word, as a model streams: a word of hex letters (`a`) could begin an IPv6 address.
    let pieces: Vec<&str> = text.split_inclusive(' ').collect();
    let (mut pending, mut before) = (String::new(), None);
    for piece in pieces {
        pending.push_str(piece);
        let mut out = String::new();
        let Flow::Continue(n) = p.step(&mut before, &pending, false, &mut out) else { panic!("no stop") };
        assert_eq!(n, pending.len(), "held {:?}", &pending[n..]);
        pending.clear();
    }
}
