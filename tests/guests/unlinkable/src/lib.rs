//! A component that imports `test:unlinkable/missing`, which no host here provides, so that the
//! host's refusal and `sluicegate check`'s report of it can be tested.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        inline: r#"
            package test:unlinkable;

            interface missing {
                ping: func() -> u32;
            }

            world unlinkable {
                import missing;
                export run: func() -> u32;
            }
        "#,
    });

    struct Unlinkable;

    impl Guest for Unlinkable {
        fn run() -> u32 {
            // Called, so the import stays in the component.
            test::unlinkable::missing::ping()
        }
    }

    export!(Unlinkable);
}
