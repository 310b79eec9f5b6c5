use super::*;
use proptest::prelude::*;

/// Every built-in detector, masking (built once: the DFA takes a while).
fn all() -> &'static Patterns {
    static ALL: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let names = ["email", "card", "iban", "ssn", "ipv4", "api-key", "jwt"];
        Patterns::new(names.iter().map(|n| builtin(n, Action::Mask).unwrap()).collect(), None).unwrap()
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
        ("nothing here: 42 and sk-short", "nothing here: 42 and sk-short"),
        ("no boundary: aaaask-ant-abcdefghijklmnopqrstuvwx", "no boundary: aaaask-ant-abcdefghijklmnopqrstuvwx"),
    ];
    for (text, want) in cases {
        assert_eq!(streamed(p, &[text]).0, want, "{text}");
    }
}

#[test]
fn a_pattern_without_a_longest_match_needs_a_cap() {
    let d = Detector { name: "t".into(), pattern: "TCK-[0-9]+".into(), check: None, action: Action::Mask };
    assert!(Patterns::new(vec![d.clone()], None).unwrap_err().0.contains("no longest match"));
    assert_eq!(Patterns::new(vec![d], Some(40)).unwrap().cap(), 40);
    let bad = Detector { name: "b".into(), pattern: "(".into(), check: None, action: Action::Mask };
    assert!(Patterns::new(vec![bad], None).unwrap_err().0.contains("detector `b`"));
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z ]{1,6}",
        2 => prop::sample::select(vec![
            "ann@example.com", "4111 1111 1111 1111", "4111111111111112", "GB82 WEST 1234 5698 7654 32",
            "123-45-6789", "10.0.0.1", "sk-ant-abcdefghijklmnopqrstuvwx", "AKIAABCDEFGHIJKLMNOP", " ", "-", ".",
            "\u{e9}", "@",
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
