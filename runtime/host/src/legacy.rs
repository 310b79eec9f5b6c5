//! The legacy per-event contract, and the shim that runs it as a batch interceptor.
//!
//! The shim calls the per-event interceptor once per event, in order, and turns each answer into
//! verdict ops. The result is the same verdict a batch interceptor doing the same work would
//! return, so both go through the same checks and reach the client identically.

use sluicegate_guest::{BatchView, Config, EventRef, Interceptor, NewEvent, StreamContext, VerdictBuilder};

pub use crate::bindings::{Action, Event};

/// A native interceptor written against the per-event contract (`process-event` in the WIT).
pub trait EventInterceptor: Send + Sync + 'static {
    /// Decides the fate of one event.
    fn process_event(&self, event: Event) -> Action;
}

/// Runs an [`EventInterceptor`] as a batch [`Interceptor`].
pub struct PerEvent<T>(pub T);

impl<T: EventInterceptor + FromConfig> Interceptor for PerEvent<T> {
    type Stream = ();

    fn new(config: &Config) -> Result<Self, String> {
        T::from_config(config).map(PerEvent)
    }

    fn open(&self, _context: &StreamContext) {}

    fn process_batch(&self, _stream: &mut (), batch: BatchView<'_>, out: &mut VerdictBuilder) {
        shim(batch, out, |event| Ok::<_, ()>(self.0.process_event(event))).unwrap_or(());
    }
}

/// How a per-event interceptor is built from its configuration.
pub trait FromConfig: Sized {
    /// Builds it from the interceptor's configuration; an error makes it unusable.
    fn from_config(config: &Config) -> Result<Self, String>;
}

/// Feeds each event of `batch` to `process_event` and records its answer in `out`. Stops after
/// an `end` answer (the events left are dropped by [`VerdictBuilder::complete`]) or at the first
/// error.
pub fn shim<E>(
    batch: BatchView<'_>,
    out: &mut VerdictBuilder,
    mut process_event: impl FnMut(Event) -> Result<Action, E>,
) -> Result<(), E> {
    for e in batch.iter() {
        match process_event(to_legacy(&e))? {
            Action::Keep => out.keep(),
            Action::Drop => out.drop(),
            Action::Replace(events) => replace_with(out, &events),
            Action::End(events) => {
                replace_with(out, &events);
                out.end();
                break;
            }
        }
    }
    Ok(())
}

/// The event as the legacy contract sees it: owned strings, one allocation per field.
pub fn to_legacy(e: &EventRef<'_>) -> Event {
    let own = |s: Option<&str>| s.map(str::to_string);
    match e.comment() {
        Some(text) => Event { comment: true, event_type: None, data: Some(text.to_string()), id: None, retry: None },
        None => Event {
            comment: false,
            event_type: own(e.event_type()),
            data: own(e.data()),
            id: own(e.id()),
            retry: e.retry(),
        },
    }
}

/// One consumed event becomes `events` (none: a drop).
fn replace_with(out: &mut VerdictBuilder, events: &[Event]) {
    let Some((first, rest)) = events.split_first() else {
        return out.drop();
    };
    out.replace_with(&new_event(first));
    for e in rest {
        out.insert(&new_event(e));
    }
}

fn new_event(e: &Event) -> NewEvent<'_> {
    NewEvent {
        event_type: e.event_type.as_deref(),
        data: e.data.as_deref(),
        id: e.id.as_deref(),
        retry: e.retry,
        comment: e.comment,
    }
}

/// The native twin of `legacy-passthrough`: keeps every event, one call per event.
pub struct Passthrough;

impl EventInterceptor for Passthrough {
    fn process_event(&self, _event: Event) -> Action {
        Action::Keep
    }
}

impl FromConfig for Passthrough {
    fn from_config(_config: &Config) -> Result<Self, String> {
        Ok(Passthrough)
    }
}
