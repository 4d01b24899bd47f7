//! Crash points for tests: places where a test kills the process deterministically
//! (instead of racing a sleep), through the `fail` crate under the `failpoints` feature.
//! Without the feature they compile to nothing.

/// Aborts the process at this point (as `kill -9` would: no destructor runs, nothing
/// is flushed) when the `FAILPOINTS` environment variable names it with `return`.
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| {
            tracing::warn!(point = $name, "crash point reached: aborting the process");
            std::process::abort()
        });
    };
}
pub(crate) use crash_point;

/// Reads the crash points to arm from `FAILPOINTS` (`name=return;...`); a no-op unless
/// the crate was built with the `failpoints` feature. A flow binary calls it at start.
pub fn init_failpoints() {
    #[cfg(feature = "failpoints")]
    {
        // The scenario holds a global lock and the configuration for the rest of the
        // process: set it up once, and never tear it down.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| std::mem::forget(fail::FailScenario::setup()));
    }
}
