//! Native interceptors: Rust types that implement [`sluicegate_guest::Interceptor`] (or, for the
//! text world, [`sluicegate_guest::text::TextGuard`] on the host's streaming-text engine) run in
//! the proxy's own process, with the same batch layout and the same verdict checks as a guest.
//! The only difference left is the sandbox boundary, which is what a guest-against-native
//! comparison measures.

use crate::batch::Batch;
use crate::interceptor::{Fault, Interceptor, InterceptorStream, TrapKind, World};
use crate::legacy::{self, PerEvent};
use crate::text::TextInterceptor;
use crate::verdict::{Applied, apply_batch, apply_finish};
use sluicegate_guest::{Config, EndReason, StreamContext, VerdictBuilder};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// The names `native:NAME` accepts: the native twins of the example guests.
pub const NAMES: &[&str] = &[
    "passthrough",
    "legacy-passthrough",
    "redact",
    "drop",
    "summary",
    "deny-phrases",
    "tool-guard",
    "token-budget",
    "patterns",
];

/// Builds the native twin called `name` with `config`.
pub fn by_name(name: &str, config: &Config, max_output: usize) -> Result<Arc<dyn Interceptor>, String> {
    let label = format!("native:{name}");
    Ok(match name {
        "passthrough" => Arc::new(Native::<passthrough::Passthrough>::new(label, config, max_output)?),
        "redact" => Arc::new(TextInterceptor::<redact::Redact>::from_config(label, config, max_output)?),
        "drop" => Arc::new(Native::<drop::Drop>::new(label, config, max_output)?),
        "summary" => Arc::new(Native::<summary::Summary>::new(label, config, max_output)?),
        "deny-phrases" => {
            Arc::new(TextInterceptor::<deny_phrases::DenyPhrases>::from_config(label, config, max_output)?)
        }
        "tool-guard" => Arc::new(Native::<tool_guard::ToolGuard>::new(label, config, max_output)?),
        "token-budget" => {
            Arc::new(TextInterceptor::<token_budget::TokenBudget>::from_config(label, config, max_output)?)
        }
        "patterns" => Arc::new(TextInterceptor::<patterns::PatternsGuard>::from_config(label, config, max_output)?),
        "legacy-passthrough" => Arc::new(Native::<PerEvent<legacy::Passthrough>>::new(label, config, max_output)?),
        _ => {
            return Err(format!("no native interceptor named `{name}` (known: {})", NAMES.join(", ")));
        }
    })
}

/// A native interceptor served to the proxy.
pub struct Native<T> {
    name: String,
    inner: Arc<T>,
    max_output: usize,
}

impl<T: sluicegate_guest::Interceptor> Native<T> {
    /// Builds `T` from `config`.
    pub fn new(name: impl Into<String>, config: &Config, max_output: usize) -> Result<Self, String> {
        let name = name.into();
        let inner = T::new(config).map_err(|e| format!("{name}: invalid configuration: {e}"))?;
        Ok(Native { name, inner: Arc::new(inner), max_output })
    }
}

impl<T: sluicegate_guest::Interceptor> Interceptor for Native<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn world(&self) -> World {
        World::Batch
    }

    fn open(&self, context: &StreamContext) -> Result<Box<dyn InterceptorStream>, Fault> {
        let inner = self.inner.clone();
        crate::store::clear_unavailable();
        let state = catch_unwind(AssertUnwindSafe(|| inner.open(context))).map_err(panic_fault)?;
        store_fault()?;
        Ok(Box::new(NativeStream { inner, state, verdict: VerdictBuilder::new(), max_output: self.max_output }))
    }
}

struct NativeStream<T: sluicegate_guest::Interceptor> {
    inner: Arc<T>,
    state: T::Stream,
    verdict: VerdictBuilder,
    max_output: usize,
}

impl<T: sluicegate_guest::Interceptor> InterceptorStream for NativeStream<T> {
    fn process(&mut self, input: &Batch, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        let (inner, state, verdict) = (&self.inner, &mut self.state, &mut self.verdict);
        crate::store::clear_unavailable();
        catch_unwind(AssertUnwindSafe(|| inner.process_batch(state, input.view(), verdict))).map_err(panic_fault)?;
        store_fault()?;
        self.verdict.complete(input.len());
        Ok(apply_batch(input, self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }

    fn finish(&mut self, reason: EndReason, output: &mut Batch) -> Result<Applied, Fault> {
        self.verdict.clear();
        let (inner, state, verdict) = (&self.inner, &mut self.state, &mut self.verdict);
        crate::store::clear_unavailable();
        catch_unwind(AssertUnwindSafe(|| inner.finish(state, reason, verdict))).map_err(panic_fault)?;
        store_fault()?;
        self.verdict.complete(0);
        Ok(apply_finish(self.verdict.ops(), self.verdict.bytes(), output, self.max_output)?)
    }
}

/// A store the call found unavailable makes the call a fault, as for a guest.
fn store_fault() -> Result<(), Fault> {
    crate::store::take_unavailable().map_or(Ok(()), |why| Err(Fault::Store(why)))
}

fn panic_fault(payload: Box<dyn Any + Send>) -> Fault {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    Fault::Trap { kind: TrapKind::Panic, message: format!("native interceptor panicked: {msg}") }
}
