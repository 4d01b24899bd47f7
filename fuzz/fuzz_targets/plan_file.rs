//! Launch plans from the places they come from: plan files (`parse_plans` on TOML text,
//! what `plans apply FILE` reads) and stored plans (`LaunchPlan::from_json`, what a
//! scheduler reads back from the store). Properties: no panic and no hang; a plan that
//! validates is stored and read back to the same content; its schedule answers every
//! question the scheduler asks (next tick, last tick, ticks in a window, catch-up).
#![no_main]

use std::sync::OnceLock;

use braid_dag::FlowSpec;
use braid_runtime::plan::{LaunchPlan, parse_plans};
use braidflow_fuzz::DATA_SYNC_SPEC;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;

/// The flow the `sites` plan file targets.
fn data_sync() -> &'static FlowSpec {
    static SPEC: OnceLock<FlowSpec> = OnceLock::new();
    SPEC.get_or_init(|| FlowSpec::from_json(DATA_SYNC_SPEC).expect("the data_sync spec is valid"))
}

fn exercise(plan: &LaunchPlan) {
    // Stored as JSON, read back by the scheduler: the same plan.
    let stored = plan.to_json();
    let back =
        LaunchPlan::from_json(&stored).unwrap_or_else(|e| panic!("stored plan {stored} does not read back: {e}"));
    assert_eq!(back.content_hash(), plan.content_hash(), "{stored}");
    assert_eq!(back.to_json(), stored);
    let _ = plan.check_flow(data_sync());
    for set in plan.parameter_sets().iter().take(16) {
        let _ = set.run_name(plan.name());
        let _ = plan.params_for(set);
    }
    let _ = plan.catch_up().to_string();
    let Some(schedule) = plan.schedule() else { return };
    let _ = schedule.describe();
    // A day with a DST change in America/New_York and Europe/Berlin is near.
    let t: Timestamp = "2026-03-08T06:30:00Z".parse().expect("a fixed instant");
    let day = SignedDuration::from_hours(24);
    if let Some(next) = schedule.next_after(t) {
        assert!(next > t, "next tick {next} is not after {t}");
    }
    if let Some(last) = schedule.last_at_or_before(t) {
        assert!(last <= t, "last tick {last} is after {t}");
    }
    let ticks = schedule.upcoming(t, 4);
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
    if let Ok(window) = schedule.ticks_between(t, t + day, 32) {
        assert!(window.iter().all(|x| *x >= t && *x < t + day), "{window:?}");
    }
    let (latest, _) = schedule.latest_ticks(t - day, t, 4);
    assert!(latest.iter().all(|x| *x > t - day && *x <= t), "{latest:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_plans(text, "fuzz.toml") {
        Ok(plans) => plans.iter().for_each(exercise),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && let Ok(plan) = LaunchPlan::from_json(&value)
    {
        exercise(&plan);
    }
});
