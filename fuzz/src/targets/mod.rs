//! The fuzz targets: each `run(data)` must never panic, whatever the bytes.

/// Declares the target modules and the name → entry point table.
macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*
        /// Every target, by name.
        pub const ALL: &[(&str, fn(&[u8]))] = &[$((stringify!($name), $name::run)),*];
    };
}

targets!(cookie, client_ip, normalize, tcf);
