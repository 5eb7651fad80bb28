//! Unit tests of the manager that need no apiserver.

use super::*;

#[test]
fn tunnel_condition_says_up_or_down() {
    let up = tunnel_condition(true);
    assert_eq!(up.type_, CONDITION_TUNNEL_UP);
    assert_eq!(
        (up.status.as_str(), up.reason.as_deref()),
        ("True", Some("TunnelUp"))
    );
    let down = tunnel_condition(false);
    assert_eq!(
        (down.status.as_str(), down.reason.as_deref()),
        ("False", Some("TunnelDown"))
    );
}

#[test]
fn errors_have_short_metric_labels() {
    assert_eq!(Error::NotReady.metric_label(), "not_ready");
    assert_eq!(Error::MissingField("uid").metric_label(), "pod");
}
