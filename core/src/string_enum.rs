//! The one macro for enums written as words: statuses here, launch kinds and states in
//! `braidflow-store`.

/// Declares a `Copy` enum of unit variants, each written as one word: in JSON (serde,
/// `snake_case`), in databases and on the command line. Generates `ALL`, `as_str`,
/// `Display` and `FromStr`; the word of each variant is given once, next to it.
///
/// Not part of the API (`#[doc(hidden)]`): it exists so braid's crates share one
/// definition. The crate that calls it must depend on `serde`. The error of `FromStr` is
/// made by `$make(what, input, expected)`, where `what` is the literal after the type's
/// name, `input` the refused text and `expected` the list of words, so each crate keeps
/// its own error type and message.
#[doc(hidden)]
#[macro_export]
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident, $what:literal, $err:ty = $make:expr;
        { $($(#[$vmeta:meta])* $variant:ident = $s:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        $vis enum $ty { $($(#[$vmeta])* $variant),+ }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The word this value is written as (the same in JSON, in stores and on the
            /// command line); `FromStr` reads it back.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> ::std::result::Result<Self, $err> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => {
                        let make: fn(&'static str, &str, String) -> $err = $make;
                        Err(make($what, s, format!("expected one of: {}", [$($s),+].join(", "))))
                    }
                }
            }
        }
    };
}
