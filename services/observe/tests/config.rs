//! The example config under deploy/config loads into observe's typed
//! config, so the documented file cannot drift from the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::repo_root;

#[test]
fn example_config_loads() {
    let file = repo_root().join("deploy/config/observe.toml");
    let config: strata_observe::Config =
        strata_kit::settings::load_with_env("observe", Some(&file), Some(Default::default())).unwrap();
    assert_eq!(config.server.listen.port(), strata_observe::DEFAULT_PORT);
    assert_eq!(config.metrics.listen.port(), strata_observe::DEFAULT_METRICS_PORT);
    assert_eq!(config.identity.public_key_file, "/etc/strata/public.pem");
    assert_eq!(config.event_log_retention_days, 90);
    assert!(config.default_checks);
}
