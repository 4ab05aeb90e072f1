//! The example configs under deploy/config load into each service's typed
//! config, so the documented files cannot drift from the code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use strata_integration_tests::repo_root;

#[test]
fn example_configs_load() {
    let dir = repo_root().join("deploy/config");
    let compute: strata_compute::Config =
        strata_kit::settings::load("compute", Some(&dir.join("compute.toml"))).unwrap();
    assert_eq!(compute.server.listen.port(), strata_compute::DEFAULT_PORT);
    assert_eq!(compute.data_url, "http://127.0.0.1:8704");
    let data: strata_data::Config = strata_kit::settings::load("data", Some(&dir.join("data.toml"))).unwrap();
    assert_eq!(data.servers.len(), 1);
    assert_eq!(data.server.listen.port(), strata_data::DEFAULT_PORT);
    let gateway: strata_gateway::Config =
        strata_kit::settings::load("gateway", Some(&dir.join("gateway.toml"))).unwrap();
    assert_eq!(gateway.upstreams.len(), 4);
    let traffic: strata_traffic::Config =
        strata_kit::settings::load("traffic", Some(&dir.join("traffic.toml"))).unwrap();
    assert_eq!(traffic.server.listen.port(), strata_traffic::DEFAULT_PORT);
    assert_eq!(traffic.ingress.listen.port(), strata_traffic::DEFAULT_INGRESS_PORT);
    assert_eq!(traffic.metrics.listen.port(), strata_traffic::DEFAULT_METRICS_PORT);
}
