//! `tool-guard`: which MCP tools a client may see and call. Config `allow` or `deny` (one of the
//! two, comma-separated tool names).
//!
//! One component serves both chains of a route:
//! - in the request chain it refuses a JSON-RPC `tools/call` (alone or inside a batch array) whose
//!   tool is not allowed, or whose tool name it cannot read: the verdict replaces the request with
//!   a refusal (`event: 403`, data a JSON error naming the tool) and ends, which the proxy turns
//!   into a JSON-RPC error carrying the request's id;
//! - in the response chain it removes the tools that are not allowed from every `tools/list`
//!   result, whether the result arrives as a JSON body or as an event of an event stream. Every
//!   other byte of the message stays as it was.
//!
//! It judges messages by their content (a `method` of `tools/call`, a `result` with a `tools`
//! array), so it needs no telling which chain it is in. Names are compared after JSON unescaping,
//! exactly (MCP tool names are case-sensitive).

use sluicegate_guest::json::{self, Doc, Kind};
use sluicegate_guest::{BatchView, Config, Interceptor, NewEvent, Replacement, StreamContext, VerdictBuilder};

/// The interceptor.
pub struct ToolGuard {
    rule: Rule,
}

enum Rule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

impl ToolGuard {
    /// True if the tool called `name` may be listed and called.
    pub fn allows(&self, name: &str) -> bool {
        match &self.rule {
            Rule::Allow(names) => names.iter().any(|n| n == name),
            Rule::Deny(names) => !names.iter().any(|n| n == name),
        }
    }

    /// What to do with one message (a JSON-RPC object or a batch array of them): `None` keeps
    /// it, `Some(Err(why))` refuses it, `Some(Ok(text))` forwards `text` instead. A request
    /// that is not JSON to this scanner (too deep, `NaN`, ...) is refused: the server's parser
    /// might read a call in it that this one cannot see.
    pub fn judge(&self, doc: &mut Doc, text: &str, request: bool) -> Option<Result<String, String>> {
        if !doc.parse(text) {
            return request.then(|| Err("tool-guard could not read this request as JSON".into()));
        }
        let root = doc.root()?;
        let messages: Vec<usize> =
            if doc.node(root).kind == Kind::Array { doc.items(root).collect() } else { vec![root] };
        let mut splices: Vec<(usize, usize, String)> = Vec::new();
        for message in messages {
            if doc.node(message).kind != Kind::Object {
                continue;
            }
            if decoded(doc, text, doc.get(text, message, "method")).as_deref() == Some("tools/call") {
                let params = doc.get(text, message, "params");
                let name = params.and_then(|p| decoded(doc, text, doc.get(text, p, "name")));
                match name {
                    Some(name) if self.allows(&name) => {}
                    Some(name) => return Some(Err(format!("tool `{name}` is not allowed here (tool-guard)"))),
                    None => return Some(Err("a tools/call without a tool name (tool-guard)".into())),
                }
            }
            let tools = doc.get(text, message, "result").and_then(|r| doc.get(text, r, "tools"));
            if let Some(tools) = tools.filter(|&t| doc.node(t).kind == Kind::Array)
                && let Some(kept) = self.filter_tools(doc, text, tools)
            {
                let node = doc.node(tools);
                splices.push((node.start, node.end, kept));
            }
        }
        if splices.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (start, end, replacement) in splices {
            out.push_str(&text[copied..start]);
            out.push_str(&replacement);
            copied = end;
        }
        out.push_str(&text[copied..]);
        Some(Ok(out))
    }

    /// The tools array without the tools that are not allowed, or none if it keeps them all.
    fn filter_tools(&self, doc: &Doc, text: &str, tools: usize) -> Option<String> {
        let mut kept = Vec::new();
        let mut removed = false;
        for tool in doc.items(tools) {
            let name = (doc.node(tool).kind == Kind::Object).then(|| decoded(doc, text, doc.get(text, tool, "name")));
            match name {
                // A tool whose name cannot be read cannot be shown to be allowed.
                Some(Some(name)) if self.allows(&name) => kept.push(tool),
                Some(_) => removed = true,
                None => kept.push(tool),
            }
        }
        if !removed {
            return None;
        }
        let mut out = String::from("[");
        for (i, tool) in kept.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let node = doc.node(tool);
            out.push_str(&text[node.start..node.end]);
        }
        out.push(']');
        Some(out)
    }
}

/// The unescaped text of string node `at`.
fn decoded(doc: &Doc, text: &str, at: Option<usize>) -> Option<String> {
    let raw = doc.raw_str(text, at)?;
    let mut out = String::new();
    json::decode(raw, &mut out);
    Some(out)
}

fn names(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect()
}

/// One stream's state: the scanner, and whether this is a request (the request chain's context
/// has no response status).
pub struct GuardStream {
    doc: Doc,
    request: bool,
}

impl Interceptor for ToolGuard {
    type Stream = GuardStream;

    fn new(config: &Config) -> Result<Self, String> {
        let rule = match (config.get("allow"), config.get("deny")) {
            (Some(allow), None) => Rule::Allow(names(allow)),
            (None, Some(deny)) => Rule::Deny(names(deny)),
            (Some(_), Some(_)) => return Err("give `allow` or `deny`, not both".into()),
            (None, None) => return Err("`allow` or `deny` (comma-separated tool names) is required".into()),
        };
        Ok(ToolGuard { rule })
    }

    fn open(&self, context: &StreamContext) -> GuardStream {
        GuardStream { doc: Doc::default(), request: context.status == 0 }
    }

    fn process_batch(&self, stream: &mut GuardStream, batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            // Without `tools` in it, or a `\` that could spell it, a message neither calls nor
            // lists tools.
            let relevant = |d: &&str| d.contains("tools") || d.contains('\\');
            let verdict =
                event.data().filter(relevant).and_then(|data| self.judge(&mut stream.doc, data, stream.request));
            match verdict {
                None => out.keep(),
                Some(Ok(text)) => out.replace(&Replacement::data(&text)),
                Some(Err(why)) => {
                    let mut body = String::from("{\"error\":{\"type\":\"tool_refused\",\"message\":\"");
                    json::encode(&why, &mut body);
                    body.push_str("\"}}");
                    out.replace_with(&NewEvent::message(&body).with_type("403"));
                    out.end();
                    return;
                }
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(ToolGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str) -> ToolGuard {
        ToolGuard { rule: Rule::Allow(names(allow)) }
    }

    #[test]
    fn refuses_calls_to_other_tools_however_they_are_spelled() {
        let g = guard("count");
        let mut doc = Doc::default();
        let call =
            |name: &str| format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":{name}}}}}"#);
        assert_eq!(g.judge(&mut doc, &call("\"count\""), true), None);
        assert!(matches!(g.judge(&mut doc, &call("\"secret\""), true), Some(Err(why)) if why.contains("`secret`")));
        assert!(matches!(g.judge(&mut doc, &call("\"c\\u006funt2\""), true), Some(Err(_))));
        assert!(matches!(g.judge(&mut doc, &call("3"), true), Some(Err(_))), "a name that is not a string");
        let escaped_method = r#"{"method":"tools\/call","params":{"name":"secret"}}"#;
        assert!(matches!(g.judge(&mut doc, escaped_method, true), Some(Err(_))));
        let in_batch = format!("[{},{}]", call("\"count\""), call("\"secret\""));
        assert!(matches!(g.judge(&mut doc, &in_batch, true), Some(Err(_))), "a call inside a batch array");
        let deep = format!(
            r#"{{"method":"tools/call","params":{{"name":"secret","x":{}{}}}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(matches!(g.judge(&mut doc, &deep, true), Some(Err(_))), "a request the scanner cannot read");
        assert_eq!(g.judge(&mut doc, &deep, false), None, "a response it cannot read is kept");
    }

    #[test]
    fn lists_only_allowed_tools_and_keeps_every_other_byte() {
        let g = guard("count");
        let mut doc = Doc::default();
        let list = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","x":1}, {"name":"count"},{"name":"secret"}],"nextCursor":null}}"#;
        let out = g.judge(&mut doc, list, false).unwrap().unwrap();
        assert_eq!(out, r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"count"}],"nextCursor":null}}"#);
        let only_allowed = r#"{"id":2,"result":{"tools":[{"name":"count"}]}}"#;
        assert_eq!(g.judge(&mut doc, only_allowed, false), None, "nothing to remove: kept as it is");
        let deny = ToolGuard { rule: Rule::Deny(names("secret, echo")) };
        let out = deny.judge(&mut doc, list, false).unwrap().unwrap();
        assert!(out.contains(r#"[{"name":"count"}]"#), "{out}");
    }
}
