use super::*;
use clap::Parser;

#[test]
fn addresses() {
    // (--gateway-address, --gateway-node-port, the address given to pods)
    for (addr, node_port, want) in [
        ("10.201.0.1", 30222, "10.201.0.1:30222"),
        ("gw.example.org:2222", 30222, "gw.example.org:2222"),
        ("[fd00::1]", 30222, "[fd00::1]:30222"),
    ] {
        let got = gateway_address(addr, node_port);
        assert_eq!(got.ok().as_deref(), Some(want), "{addr}");
    }
    let no_port = gateway_address("10.0.0.1", 0);
    assert!(
        matches!(no_port, Err(TunnelError::NoPort(_))),
        "{no_port:?}"
    );
    let not_an_address = gateway_address("http://x", 30222);
    assert!(
        matches!(not_an_address, Err(TunnelError::Address(_))),
        "{not_an_address:?}"
    );
}

#[test]
fn settings_from_flags() {
    let off = Config::parse_from(["offload-provider"]);
    assert!(settings(&off).expect("ok").is_none(), "off by default");
    let on = Config::parse_from([
        "offload-provider",
        "--gateway-address",
        "10.201.0.1",
        "--gateway-namespace",
        "tunnels",
        "--gateway-port-range",
        "41000-41009",
    ]);
    let s = settings(&on).expect("ok").expect("on");
    assert_eq!(s.public_address, "10.201.0.1:30222");
    assert_eq!(s.gateway.namespace, "tunnels");
    assert_eq!(s.gateway.node_port, Some(30222));
    assert_eq!(s.range.to_string(), "41000-41009");
    assert_eq!(s.bastion_public_key, None, "fetched from the plugin");
    // An interLink API server cannot tell us the key.
    let interlink = Config::parse_from([
        "offload-provider",
        "--gateway-address",
        "10.201.0.1",
        "--plugin-mode",
        "interlink",
    ]);
    assert!(matches!(
        settings(&interlink),
        Err(TunnelError::NoBastionKey)
    ));
    let (_, public) = offload_wire::tunnel::generate_ed25519("bastion").expect("keygen");
    let with_key = Config::parse_from([
        "offload-provider",
        "--gateway-address",
        "gw:22",
        "--plugin-mode",
        "interlink",
        "--bastion-public-key",
        &format!("{public} some comment"),
    ]);
    let s = settings(&with_key).expect("ok").expect("on");
    assert_eq!(s.bastion_public_key.as_deref(), Some(public.as_str()));
    let bad_key = Config::parse_from([
        "offload-provider",
        "--gateway-address",
        "gw:22",
        "--bastion-public-key",
        "not a key",
    ]);
    assert!(matches!(
        settings(&bad_key),
        Err(TunnelError::BastionKey(_))
    ));
}

#[test]
fn condition_keeps_its_transition_time_until_it_flips() {
    let t0: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().expect("ts");
    let t1: jiff::Timestamp = "2026-01-01T12:00:05Z".parse().expect("ts");
    let down = tunnel_condition(&[], None, t0);
    assert_eq!(down.type_, CONDITION_TUNNEL_UP);
    assert_eq!(down.status, "False");
    assert_eq!(down.last_transition_time, Some(Time(t0)));
    let still = tunnel_condition(std::slice::from_ref(&down), Some(false), t1);
    assert_eq!(still.last_transition_time, Some(Time(t0)));
    let up = tunnel_condition(std::slice::from_ref(&still), Some(true), t1);
    assert_eq!(up.status, "True");
    assert_eq!(up.reason.as_deref(), Some("TunnelUp"));
    assert_eq!(up.last_transition_time, Some(Time(t1)));
}

#[test]
fn the_authorized_key_is_read_back_from_the_rendered_config() {
    let (_, public) = offload_wire::tunnel::generate_ed25519("b").expect("keygen");
    let range = "40000-40002".parse().expect("range");
    let text = offload_wire::tunnel::authorized_keys(&public, range, "0.0.0.0").expect("render");
    assert_eq!(key_of_authorized_keys(&text), Some(public));
    assert_eq!(
        key_of_authorized_keys("# no bastion key configured yet\n"),
        None
    );
    assert_eq!(key_of_authorized_keys("garbage here\n"), None);
}

/// A pod with what a user can write: forged tunnel annotations (a victim's
/// gateway port, another gateway) next to ordinary ones.
fn forged_pod() -> Pod {
    let mut p = Pod::default();
    p.metadata.annotations = Some(std::collections::BTreeMap::from([
        (
            keys::tunnel::GATEWAY_ADDRESS.into(),
            "203.0.113.9:22".into(),
        ),
        (
            keys::tunnel::GATEWAY_HOST_KEY.into(),
            "ssh-ed25519 AAAAforged".into(),
        ),
        (keys::tunnel::PORTS.into(), r#"{"80":40000}"#.into()),
        (keys::tunnel::ALLOCATION_SIGNATURE.into(), "v1.00".into()),
        ("tunnel.offload.dev/anything".into(), "x".into()),
        (keys::tunnel::SERVICE.into(), "web".into()),
        ("app".into(), "kept".into()),
    ]));
    p
}

#[test]
fn user_written_tunnel_annotations_never_travel() {
    let sent = without_tunnel_annotations(&forged_pod());
    let a = sent.metadata.annotations.expect("annotations");
    assert!(
        a.keys().all(|k| !k.starts_with(keys::tunnel::PREFIX)),
        "{a:?}"
    );
    assert_eq!(a.get("app").map(String::as_str), Some("kept"));
    assert_eq!(
        a.get(keys::tunnel::SERVICE).map(String::as_str),
        Some("web")
    );

    // With an allocation: exactly gateway-manager's three keys, no signature.
    let ours = offload_wire::tunnel::TunnelAnnotations {
        gateway_address: "10.201.0.1:30222".into(),
        gateway_host_key: "ssh-ed25519 AAAAours".into(),
        ports: std::collections::BTreeMap::from([(
            offload_wire::tunnel::ContainerPort(8080),
            offload_wire::tunnel::GatewayPort(40007),
        )]),
    };
    let sent = annotated(&forged_pod(), &ours);
    let a = sent.metadata.annotations.expect("annotations");
    let tunnel: std::collections::BTreeMap<_, _> = a
        .iter()
        .filter(|(k, _)| k.starts_with(keys::tunnel::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(tunnel, ours.to_map());
}
