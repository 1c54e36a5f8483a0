//! Toolchain smoke test: a component exporting `add`.
#[allow(warnings)]
mod bindings;

struct Adder;

impl bindings::Guest for Adder {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

bindings::export!(Adder with_types_in bindings);
