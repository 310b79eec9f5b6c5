//! The glue between the generated component bindings and [`Interceptor`]. Used by [`export!`].

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

use bindings::exports::sluicegate::interceptor::batch as wit;
use bindings::sluicegate::interceptor::host;
use bindings::sluicegate::interceptor::store as wit_store;

/// Builds the interceptor from the configuration the host holds for it. A configuration error
/// is logged and then traps: the host reports the interceptor as faulty.
pub fn load<T: Interceptor>() -> T {
    let store = crate::Store::new(std::sync::Arc::new(HostStore));
    let config = Config::new(host::config_entries()).with_store(store);
    match T::new(&config) {
        Ok(it) => it,
        Err(message) => {
            host::log(host::Level::Error, &format!("invalid configuration: {message}"));
            panic!("invalid configuration: {message}");
        }
    }
}

pub fn open<T: Interceptor>(it: &T, context: wit::StreamContext) -> T::Stream {
    it.open(&StreamContext {
        stream_id: context.stream_id,
        method: context.method,
        path: context.path,
        query: context.query,
        request_headers: context.request_headers,
        status: context.status,
        response_headers: context.response_headers,
    })
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
    let reason = match reason {
        wit::EndReason::UpstreamClosed => EndReason::UpstreamClosed,
        wit::EndReason::UpstreamFailed => EndReason::UpstreamFailed,
        wit::EndReason::ClientGone => EndReason::ClientGone,
        wit::EndReason::EndedByInterceptor => EndReason::EndedByInterceptor,
        wit::EndReason::Shutdown => EndReason::Shutdown,
    };
    let mut out = VerdictBuilder::new();
    it.finish(stream, reason, &mut out);
    out.complete(0);
    let (ops, bytes) = out.take();
    wit::Verdict { ops, bytes }
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
