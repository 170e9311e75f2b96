//! The storage conformance suite: every backend must pass it unchanged.

mod conformance;

use vigil_store::sqlite::SqliteStore;

fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let d = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(d.path().join("hub.db")).expect("open");
    (d, s)
}

macro_rules! backend_suite {
    ($make:expr, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $make;
                conformance::$name(&store).await;
            }
        )*
    };
}

mod sqlite_backend {
    use super::*;
    backend_suite!(
        sqlite(),
        ingested_readings_are_queryable_by_metric_and_time_range,
        the_same_batch_sent_twice_is_stored_once,
        a_batch_claiming_a_cursor_ahead_of_the_hub_is_refused,
        unknown_devices_are_quarantined_and_reprocessed_after_enrolment,
        a_device_moving_between_patients_is_attributed_by_reading_time,
        impossible_values_and_future_times_are_quarantined_with_their_reason,
        a_device_enrolled_to_another_gateway_is_quarantined,
        compaction_keeps_every_reading_and_shrinks_storage,
        latest_values_follow_device_time_not_arrival_order,
        events_are_stored_per_patient,
        gateway_and_api_tokens_are_looked_up_by_hash_and_revocable,
        separate_epochs_of_one_gateway_have_separate_cursors,
        an_observation_delivered_twice_is_one_reading_in_queries_and_after_compaction,
        a_second_finding_for_the_same_patient_and_rule_joins_the_open_alert,
        alert_lifecycle_is_recorded_as_append_only_transitions,
        an_edge_alert_synced_late_keeps_its_original_time,
        care_teams_and_the_on_call_list_are_stored,
        rule_settings_are_stored_per_patient,
        notifications_are_retried_then_dead_lettered,
        a_silenced_acknowledgement_reopens_when_its_silence_runs_out,
    );
}
