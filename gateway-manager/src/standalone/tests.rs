use super::*;
use pretty_assertions::assert_eq;

fn no_env(_: &str) -> Option<std::ffi::OsString> {
    None
}

#[test]
fn cli_is_consistent_and_parses_endpoints() {
    Args::command().debug_assert();
    assert_eq!(
        parse_service("offload-system/gm:443").expect("service"),
        Endpoint::Service {
            namespace: "offload-system".into(),
            name: "gm".into(),
            port: 443
        }
    );
    for bad in ["gm:443", "ns/gm", "ns/gm:0", "/gm:443", "ns/:1"] {
        assert!(parse_service(bad).is_err(), "{bad}");
    }
    assert_eq!(
        url_host("https://10.201.0.1:8443/mutate").expect("host"),
        "10.201.0.1"
    );
    assert_eq!(url_host("https://[::1]:8443/mutate").expect("host"), "::1");
    assert_eq!(
        url_host("https://gm.example/mutate").expect("host"),
        "gm.example"
    );
    assert!(url_host("http://x/mutate").is_err());
}

#[test]
fn former_flags_and_standalone_defaults() {
    // The command line of the binary's own integration test (tests/binary.rs).
    let a = Args::try_parse_with(
        &[
            "gateway-manager",
            "--node-name=vn",
            "--namespace",
            "gw",
            "--public-address",
            "10.201.0.1:30222",
            "--port-range",
            "43200-43209",
            "--node-port",
            "0",
            "--sync-secs",
            "3",
        ],
        no_env,
    )
    .expect("parse");
    assert_eq!(a.gateway.namespace.as_deref(), Some("gw"));
    assert_eq!(a.gateway.address.as_deref(), Some("10.201.0.1:30222"));
    assert_eq!(a.gateway.port_range.to_string(), "43200-43209");
    assert_eq!(a.gateway.node_port, 0);
    assert_eq!(a.gateway.sync_interval, Duration::from_secs(3));
    let s = settings(&a).expect("settings");
    assert_eq!(s.public_address, "10.201.0.1:30222");
    assert_eq!(s.gateway.node_port, None);

    let d = Args::try_parse_with(
        &["gateway-manager", "--node-name=vn", "--gateway-address=h:1"],
        no_env,
    )
    .expect("parse");
    assert_eq!(d.gateway.namespace.as_deref(), Some(DEFAULT_NAMESPACE));
    assert_eq!(d.gateway.sync_interval, Duration::from_secs(2));
    assert_eq!(d.gateway.service_port, 2222);
    assert!(
        Args::try_parse_with(&["gateway-manager", "--node-name=vn"], no_env).is_err(),
        "the address is required"
    );
}

#[test]
fn former_variables_are_read() {
    let env = |k: &str| {
        let v = match k {
            "GATEWAY_MANAGER_PUBLIC_ADDRESS" => "10.0.0.9:30222",
            "GATEWAY_MANAGER_NAMESPACE" => "old-ns",
            "GATEWAY_MANAGER_GATEWAY_NAME" => "old-gw",
            "GATEWAY_MANAGER_SYNC_SECS" => "7",
            "GATEWAY_MANAGER_TLS_CERT_FILE" => "/certs/tls.crt",
            "GATEWAY_MANAGER_TLS_KEY_FILE" => "/certs/tls.key",
            _ => return None,
        };
        Some(std::ffi::OsString::from(v))
    };
    let a = Args::try_parse_with(&["gateway-manager", "--node-name=vn"], env).expect("parse");
    assert_eq!(a.gateway.address.as_deref(), Some("10.0.0.9:30222"));
    assert_eq!(a.gateway.namespace.as_deref(), Some("old-ns"));
    assert_eq!(a.gateway.name, "old-gw");
    assert_eq!(a.gateway.sync_interval, Duration::from_secs(7));
    assert_eq!(
        a.serving.files(),
        Some((
            std::path::Path::new("/certs/tls.crt"),
            std::path::Path::new("/certs/tls.key")
        ))
    );
}
