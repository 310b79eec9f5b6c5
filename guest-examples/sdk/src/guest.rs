//! The glue between the generated component bindings and [`Interceptor`]. Used by [`export!`].

use crate::text::{Answer, ChannelKind, Item, StopReason, TextGuard};
use crate::{BatchView, Config, EndReason, Interceptor, StreamContext, VerdictBuilder};

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "batch-interceptor",
        pub_export_macro: true,
        export_macro_name: "__export_batch_interceptor",
        default_bindings_module: "sluicegate_guest::guest::bindings",
    });
}

/// The text world's bindings: its imports are the batch world's, so one set of glue serves both.
pub mod text_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "text-interceptor",
        pub_export_macro: true,
        export_macro_name: "__export_text_interceptor",
        default_bindings_module: "sluicegate_guest::guest::text_bindings",
        with: {
            "sluicegate:interceptor/host@0.1.3": super::bindings::sluicegate::interceptor::host,
            "sluicegate:interceptor/store@0.1.3": super::bindings::sluicegate::interceptor::store,
            "sluicegate:interceptor/types@0.1.3": super::bindings::sluicegate::interceptor::types,
        },
    });
}

use bindings::exports::sluicegate::interceptor::batch as wit;
use bindings::sluicegate::interceptor::host;
use bindings::sluicegate::interceptor::store as wit_store;
use text_bindings::exports::sluicegate::interceptor::text as wit_text;

/// Builds the interceptor from the configuration the host holds for it. A configuration error
/// is logged and then traps: the host reports the interceptor as faulty.
pub fn load<T: Interceptor>() -> T {
    build(T::new)
}

/// Builds a guard or an interceptor from the host's configuration: a configuration error is
/// logged and then traps, and the host reports the interceptor as faulty.
fn build<T>(new: impl FnOnce(&Config) -> Result<T, String>) -> T {
    let store = crate::Store::new(std::sync::Arc::new(HostStore));
    let config = Config::new(host::config_entries()).with_store(store);
    match new(&config) {
        Ok(it) => it,
        Err(message) => {
            host::log(host::Level::Error, &format!("invalid configuration: {message}"));
            panic!("invalid configuration: {message}");
        }
    }
}

fn context_of(context: wit::StreamContext) -> StreamContext {
    StreamContext {
        stream_id: context.stream_id,
        method: context.method,
        path: context.path,
        query: context.query,
        request_headers: context.request_headers,
        status: context.status,
        response_headers: context.response_headers,
    }
}

fn reason_of(reason: wit::EndReason) -> EndReason {
    match reason {
        wit::EndReason::UpstreamClosed => EndReason::UpstreamClosed,
        wit::EndReason::UpstreamFailed => EndReason::UpstreamFailed,
        wit::EndReason::ClientGone => EndReason::ClientGone,
        wit::EndReason::EndedByInterceptor => EndReason::EndedByInterceptor,
        wit::EndReason::Shutdown => EndReason::Shutdown,
    }
}

pub fn open<T: Interceptor>(it: &T, context: wit::StreamContext) -> T::Stream {
    it.open(&context_of(context))
}

pub fn process<T: Interceptor>(it: &T, stream: &mut T::Stream, batch: wit::Batch) -> wit::Verdict {
    // SAFETY: the host guarantees the layout of every batch it sends (see the WIT docs).
    #[allow(unsafe_code)]
    let view = unsafe { BatchView::new_unchecked(&batch.bytes, &batch.index) };
    let mut out = VerdictBuilder::new();
    out.expect_bytes(batch.bytes.len() + batch.bytes.len() / 8);
    it.process_batch(stream, view, &mut out);
    out.complete(view.len());
    let (ops, bytes) = out.take();
    wit::Verdict { ops, bytes }
}

pub fn finish<T: Interceptor>(it: &T, stream: &mut T::Stream, reason: wit::EndReason) -> wit::Verdict {
    let reason = reason_of(reason);
    let mut out = VerdictBuilder::new();
    it.finish(stream, reason, &mut out);
    out.complete(0);
    let (ops, bytes) = out.take();
    wit::Verdict { ops, bytes }
}

/// Builds a text guard from its configuration (see [`load`]).
pub fn load_text<G: TextGuard>() -> G {
    build(G::new)
}

pub fn text_settings<G: TextGuard>(guard: &G) -> wit_text::Settings {
    wit_text::Settings {
        max_held: u32::try_from(guard.max_held()).unwrap_or(crate::abi::MAX_WORD).min(crate::abi::MAX_WORD),
        prefilter: String::from_utf8_lossy(guard.prefilter()).into_owned(),
    }
}

pub fn text_open<G: TextGuard>(guard: &G, context: wit::StreamContext) -> G::Stream {
    guard.open(&context_of(context))
}

pub fn text_admit<G: TextGuard>(guard: &G, stream: &mut G::Stream) -> Option<wit_text::Refusal> {
    guard.admit(stream).map(|r| wit_text::Refusal {
        status: r.status,
        error_type: r.error_type,
        message: r.message,
        retry_after_seconds: r.retry_after_seconds,
    })
}

pub fn text_process<G: TextGuard>(
    guard: &G,
    stream: &mut G::Stream,
    items: Vec<wit_text::Item>,
) -> Vec<wit_text::Answer> {
    let items: Vec<Item> = items
        .into_iter()
        .map(|i| Item {
            channel: i.channel,
            kind: match i.kind {
                wit_text::Kind::Content => ChannelKind::Content,
                wit_text::Kind::ToolArguments => ChannelKind::ToolArguments,
                wit_text::Kind::Reasoning => ChannelKind::Reasoning,
                wit_text::Kind::Refusal => ChannelKind::Refusal,
                wit_text::Kind::Other => ChannelKind::Other,
            },
            text: i.text,
            last: i.last,
            pieces: i.pieces,
        })
        .collect();
    let mut answers = Vec::with_capacity(items.len());
    guard.process(stream, &items, &mut answers);
    answers
        .into_iter()
        .map(|a| match a {
            // A count past 2^31 cannot be a valid answer: the host refuses it either way.
            Answer::Release { count, text } => {
                wit_text::Answer::Release(wit_text::Release { count: u32::try_from(count).unwrap_or(u32::MAX), text })
            }
            Answer::Keep { count } => wit_text::Answer::Keep(u32::try_from(count).unwrap_or(u32::MAX)),
            Answer::Stop { text, reason } => wit_text::Answer::Stop(wit_text::Stop {
                text,
                reason: match reason {
                    StopReason::ContentFilter => wit_text::StopReason::ContentFilter,
                    StopReason::Length => wit_text::StopReason::Length,
                },
            }),
        })
        .collect()
}

pub fn text_finish<G: TextGuard>(guard: &G, stream: &mut G::Stream, reason: wit::EndReason, tokens: Option<u32>) {
    guard.finish(stream, reason_of(reason), tokens.map(u64::from));
}

/// Writes a line to the proxy's log.
pub fn log(level: host::Level, message: &str) {
    host::log(level, message)
}

/// Exports an [`Interceptor`] as the component's `batch-interceptor` world.
///
/// One instance of the type is built, on first use, from the interceptor's configuration; it
/// serves every stream that the host opens on this component instance.
#[macro_export]
macro_rules! export {
    ($interceptor:ty) => {
        const _: () = {
            use $crate::guest::bindings::exports::sluicegate::interceptor::batch as __wit;

            fn __instance() -> &'static $interceptor {
                static INSTANCE: ::std::sync::OnceLock<$interceptor> = ::std::sync::OnceLock::new();
                INSTANCE.get_or_init($crate::guest::load::<$interceptor>)
            }

            struct __Stream(::core::cell::RefCell<<$interceptor as $crate::Interceptor>::Stream>);

            impl __wit::GuestStreamState for __Stream {
                fn new(context: __wit::StreamContext) -> Self {
                    __Stream(::core::cell::RefCell::new($crate::guest::open(__instance(), context)))
                }
                fn process_batch(&self, batch: __wit::Batch) -> __wit::Verdict {
                    $crate::guest::process(__instance(), &mut self.0.borrow_mut(), batch)
                }
                fn finish(&self, reason: __wit::EndReason) -> __wit::Verdict {
                    $crate::guest::finish(__instance(), &mut self.0.borrow_mut(), reason)
                }
            }

            struct __Component;

            impl __wit::Guest for __Component {
                type StreamState = __Stream;
            }

    $crate::guest::bindings::__export_batch_interceptor!(__Component with_types_in $crate::guest::bindings);
        };
    };
}

/// Exports a [`TextGuard`] (for a [`crate::text::TextTransform`], `PerChannel<T>`) as the
/// component's `text-interceptor` world.
#[macro_export]
macro_rules! export_text {
    ($guard:ty) => {
        const _: () = {
            use $crate::guest::text_bindings::exports::sluicegate::interceptor::text as __wit;

            fn __guard() -> &'static $guard {
                static GUARD: ::std::sync::OnceLock<$guard> = ::std::sync::OnceLock::new();
                GUARD.get_or_init($crate::guest::load_text::<$guard>)
            }

            struct __Stream(::core::cell::RefCell<<$guard as $crate::text::TextGuard>::Stream>);

            impl __wit::GuestStreamState for __Stream {
                fn new(context: __wit::StreamContext) -> Self {
                    __Stream(::core::cell::RefCell::new($crate::guest::text_open(__guard(), context)))
                }
                fn admit(&self) -> Option<__wit::Refusal> {
                    $crate::guest::text_admit(__guard(), &mut self.0.borrow_mut())
                }
                fn process(&self, items: ::std::vec::Vec<__wit::Item>) -> ::std::vec::Vec<__wit::Answer> {
                    $crate::guest::text_process(__guard(), &mut self.0.borrow_mut(), items)
                }
                fn finish(&self, reason: __wit::EndReason, tokens: Option<u32>) {
                    $crate::guest::text_finish(__guard(), &mut self.0.borrow_mut(), reason, tokens)
                }
            }

            struct __Component;

            impl __wit::Guest for __Component {
                type StreamState = __Stream;
                fn describe() -> __wit::Settings {
                    $crate::guest::text_settings(__guard())
                }
            }

            $crate::guest::text_bindings::__export_text_interceptor!(__Component with_types_in $crate::guest::text_bindings);
        };
    };
}

/// The store through the WIT import.
struct HostStore;

fn store_error(e: wit_store::Error) -> crate::StoreError {
    match e {
        wit_store::Error::Unavailable(why) => crate::StoreError::Unavailable(why),
        wit_store::Error::NotACounter => crate::StoreError::NotACounter,
        wit_store::Error::TooLarge => crate::StoreError::TooLarge,
    }
}

impl crate::store::Backend for HostStore {
    fn get(&self, key: &str) -> Result<Option<crate::store::Entry>, crate::StoreError> {
        let entry = wit_store::get(key).map_err(store_error)?;
        Ok(entry.map(|e| crate::store::Entry { value: e.value, expires_in: e.expires_in }))
    }

    fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, crate::StoreError> {
        wit_store::increment(key, by, ttl_seconds).map_err(store_error)
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, crate::StoreError> {
        wit_store::compare_and_set(key, expected, value, ttl_seconds).map_err(store_error)
    }
}
