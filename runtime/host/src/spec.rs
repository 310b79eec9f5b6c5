//! Interceptor specs as users write them: `example:NAME`, `native:NAME`, or a component path.

use crate::host::{Limits, Runtime};
use crate::interceptor::Interceptor;
use crate::{examples, native};
use anyhow::{Context as _, bail};
use sluicegate_guest::Config;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where an interceptor comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Spec {
    /// A component file on disk.
    Component(PathBuf),
    /// An example guest embedded in the binary.
    Example(String),
    /// A native Rust interceptor compiled into the binary.
    Native(String),
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("example:") {
            if examples::component(name).is_none() {
                return Err(format!(
                    "no example named `{name}` (known: {})",
                    examples::names().collect::<Vec<_>>().join(", ")
                ));
            }
            return Ok(Spec::Example(name.into()));
        }
        if let Some(name) = s.strip_prefix("native:") {
            if !native::NAMES.contains(&name) {
                return Err(format!("no native interceptor named `{name}` (known: {})", native::NAMES.join(", ")));
            }
            return Ok(Spec::Native(name.into()));
        }
        if s.is_empty() {
            return Err("an interceptor spec is empty".into());
        }
        Ok(Spec::Component(PathBuf::from(s)))
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Component(path) => write!(f, "{}", path.display()),
            Spec::Example(name) => write!(f, "example:{name}"),
            Spec::Native(name) => write!(f, "native:{name}"),
        }
    }
}

impl Spec {
    /// Loads the interceptor (compiling a component if it is one) with `config`, under the
    /// runtime's default limits.
    pub fn load(&self, runtime: &Runtime, config: Config) -> anyhow::Result<Arc<dyn Interceptor>> {
        self.load_with_limits(runtime, config, runtime.limits().clone())
    }

    /// [`Spec::load`] with limits of its own (a native interceptor only takes `max_output_bytes`:
    /// it runs unsandboxed).
    pub fn load_with_limits(
        &self,
        runtime: &Runtime,
        config: Config,
        limits: Limits,
    ) -> anyhow::Result<Arc<dyn Interceptor>> {
        let name = self.to_string();
        match self {
            Spec::Component(path) => {
                let wasm = std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
                Ok(Arc::new(runtime.load_with_limits(&name, &wasm, config, limits)?))
            }
            Spec::Example(example) => {
                let Some(wasm) = examples::component(example) else { bail!("no example named `{example}`") };
                Ok(Arc::new(runtime.load_with_limits(&name, wasm, config, limits)?))
            }
            Spec::Native(native) => {
                native::by_name(native, &config, limits.max_output_bytes).map_err(anyhow::Error::msg)
            }
        }
    }
}
