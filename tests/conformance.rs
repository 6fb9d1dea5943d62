//! The stock spec against every entry of `tests/conformance/staff.json`, the
//! contract of `PhoenixKitStaff.PubSub`.
//!
//! The checks are written against the [`Contract`] trait so that an extended
//! spec (see `tests/extension.rs`) can be held to the same contract.

use staff_pubsub::staff;
use staff_pubsub_tests::conformance::{self, Contract};
use staff_pubsub_tests::contract_for;

contract_for!(Stock, staff);

#[test]
fn the_project_copy_is_byte_identical_to_the_shared_contract() {
    conformance::check_copy_matches_shared();
}

#[test]
fn topic_functions_print_the_contract_strings() {
    conformance::check_topics::<Stock>();
}

#[test]
fn parse_accepts_and_rejects_exactly_the_contract_strings() {
    conformance::check_parse::<Stock>();
}

#[test]
fn event_names_are_the_elixir_atoms() {
    conformance::check_events::<Stock>();
}

#[test]
fn payloads_have_exactly_the_contract_fields() {
    conformance::check_payload_fields::<Stock>();
}

#[tokio::test]
async fn every_broadcast_reaches_exactly_its_contract_topics() {
    conformance::check_broadcasts::<Stock>(&Stock::pubsub()).await;
}

#[test]
fn the_route_table_describes_the_contract_fan_out() {
    conformance::check_route_table::<Stock>();
}

#[tokio::test]
async fn the_delivery_example_gives_its_copies() {
    conformance::check_delivery::<Stock>().await;
}

#[test]
fn the_json_form_is_the_contract_example_and_round_trips() {
    conformance::check_json::<Stock>();
}

#[test]
fn the_route_table_names_the_stock_scope() {
    assert_eq!(staff::SPEC.scope, "staff");
    assert_eq!(staff::SPEC.routes.len(), 4);
    assert_eq!(
        <Stock as Contract>::scope(),
        conformance::contract()["scope"]
    );
}
