//! The guard's configuration keys. Every key is checked: a misspelt key is an error, never a
//! detector silently left off.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `detect` | built-in detectors, by name, separated by commas or spaces; `all`, or empty for none | `all` |
//! | `action` | what every detector does to a match: `mask`, `drop` or `stop` | `mask` |
//! | `replacement` | what a masked match becomes; `{name}` is the detector's name | `[{name}]` |
//! | `cap` | the longest match a pattern looks for (repetitions are cut to it); required for a pattern without a longest match | none |
//! | `pattern.NAME` | an operator's detector: a regular expression | |
//! | `action.NAME`, `replacement.NAME`, `cap.NAME` | the same, for one detector | |
//!
//! Operator patterns win over built-in detectors when two matches start at one place.

use crate::{Action, BUILTIN, Detector, Patterns};
use sluicegate_guest::Config;
use sluicegate_guest::text::FromConfig;

/// The keys that take a detector's name after a dot.
const PER_DETECTOR: [&str; 4] = ["pattern", "action", "replacement", "cap"];

fn action(key: &str, value: &str) -> Result<Action, String> {
    Action::parse(value).ok_or_else(|| format!("`{key}`: `{value}` is not an action (mask, drop or stop)"))
}

fn cap(key: &str, value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{key}`: `{value}` is not a length in bytes (a whole number from 1)")),
    }
}

fn replacement(key: &str, value: &str, name: &str) -> Result<String, String> {
    if value.contains('\r') {
        return Err(format!("`{key}` must not contain CR"));
    }
    Ok(value.replace("{name}", name))
}

/// The built-in detectors `detect` names.
fn built_ins(value: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(value) = value else { return Ok(BUILTIN.to_vec()) };
    let mut names = Vec::new();
    for name in value.split([',', ' ']).map(str::trim).filter(|n| !n.is_empty()) {
        if name == "all" {
            return Ok(BUILTIN.to_vec());
        }
        match BUILTIN.iter().find(|b| **b == name) {
            Some(known) => names.push(*known),
            None => return Err(format!("`detect`: no built-in detector `{name}` (there are: {})", BUILTIN.join(", "))),
        }
    }
    // The built-ins' own order decides which wins at one place, whatever order `detect` lists.
    Ok(BUILTIN.iter().copied().filter(|b| names.contains(b)).collect())
}

/// Every key is known; operator patterns' names are new.
fn check_keys(config: &Config) -> Result<(), String> {
    for (key, _) in config.entries() {
        match key.split_once('.') {
            None if ["detect", "action", "replacement", "cap"].contains(&key.as_str()) => {}
            Some((kind, name)) if PER_DETECTOR.contains(&kind) && !name.is_empty() => {
                let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)) && name.len() <= 64;
                if !valid {
                    return Err(format!("`{key}`: a detector's name is 1 to 64 of A-Z a-z 0-9 _ -"));
                }
                if kind == "pattern" && BUILTIN.contains(&name) {
                    return Err(format!("`{key}`: `{name}` is a built-in detector; give your pattern another name"));
                }
            }
            _ => {
                return Err(format!(
                    "`{key}`: not a key of this guard (detect, action, replacement, cap, pattern.NAME, action.NAME, replacement.NAME, cap.NAME)"
                ));
            }
        }
    }
    Ok(())
}

/// The detectors the configuration asks for, operator patterns first.
pub fn detectors(config: &Config) -> Result<Vec<Detector>, String> {
    check_keys(config)?;
    let default_action = config.get("action").map(|v| action("action", v)).transpose()?.unwrap_or(Action::Mask);
    let default_cap = config.get("cap").map(|v| cap("cap", v)).transpose()?;
    let mut found: Vec<Detector> = config
        .entries()
        .iter()
        .filter_map(|(key, pattern)| Some(Detector::pattern(key.strip_prefix("pattern.")?, pattern, default_action)))
        .collect();
    for name in built_ins(config.get("detect"))? {
        found.extend(Detector::builtin(name, default_action));
    }
    for detector in &mut found {
        let name = detector.name.clone();
        let key = |kind: &str| format!("{kind}.{name}");
        if let Some(v) = config.get(&key("action")) {
            detector.action = action(&key("action"), v)?;
        }
        let text = config.get(&key("replacement")).map(|v| (key("replacement"), v));
        if let Some((key, value)) = text.or(config.get("replacement").map(|v| ("replacement".to_string(), v))) {
            detector.replacement = replacement(&key, value, &name)?;
        }
        detector.cap = config.get(&key("cap")).map(|v| cap(&key("cap"), v)).transpose()?.or(default_cap);
    }
    for (key, _) in config.entries() {
        if let Some((kind, name)) = key.split_once('.')
            && kind != "pattern"
            && !found.iter().any(|d| d.name == name)
        {
            return Err(format!("`{key}`: no detector `{name}` (not detected, not a pattern)"));
        }
    }
    if found.is_empty() {
        return Err("`detect` is empty and there is no `pattern.NAME`: nothing to look for".into());
    }
    Ok(found)
}

impl FromConfig for Patterns {
    fn from_config(config: &Config) -> Result<Self, String> {
        let found = detectors(config)?;
        Patterns::new(found).map_err(|e| match &e.detector {
            Some(name) if !BUILTIN.contains(&name.as_str()) => format!("`pattern.{name}`: {}", e.message),
            _ => e.to_string(),
        })
    }
}
