//! The example guests, built from `guest-examples/` by the build script and embedded in the
//! binary, so that `example:NAME` works anywhere the binary does.

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// The component bytes of example `name`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of every example.
pub fn names() -> impl Iterator<Item = &'static str> {
    EXAMPLES.iter().map(|(n, _)| *n)
}
