use super::*;

const A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOuP1g0l7rW6m2H5kQx0G3m5xVhR5r8S0mJb3wq7YQ1a";
const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH7p3yqk3ZbQ3zq0mW2n8cVjR1xKp4Yd5eHf6gT9uB2c";

fn pin(key: Option<&str>, accept: Option<&str>) -> Pin {
    Pin {
        key: key.map(Into::into),
        accept: accept.map(Into::into),
    }
}

#[test]
fn fingerprints_are_openssh_sha256() {
    let fp = fingerprint(A).expect("fingerprint");
    assert!(fp.starts_with("SHA256:"), "{fp}");
    assert_eq!(fp.len(), "SHA256:".len() + 43, "{fp}");
    assert!(!fp.ends_with('='), "no padding, like ssh-keygen -lf");
    assert_ne!(fingerprint(A), fingerprint(B));
    assert_eq!(fingerprint("ssh-ed25519"), None);
    assert_eq!(fingerprint("ssh-ed25519 !!!"), None);
}

#[test]
fn first_key_is_pinned_then_kept() {
    assert_eq!(decide(None, A), Decision::PinFirst);
    // A ConfigMap left without a key (edited by hand) pins again.
    assert_eq!(decide(Some(&pin(None, None)), A), Decision::PinFirst);
    assert_eq!(decide(Some(&pin(Some(A), None)), A), Decision::Keep);
}

#[test]
fn another_key_is_refused_and_says_both_fingerprints() {
    let d = decide(Some(&pin(Some(A), None)), B);
    assert_eq!(
        d,
        Decision::Refuse {
            pinned: fingerprint(A).unwrap(),
            offered: fingerprint(B).unwrap(),
        }
    );
    // Accepting some other key does not accept this one.
    let d = decide(Some(&pin(Some(A), Some(&fingerprint(A).unwrap()))), B);
    assert!(matches!(d, Decision::Refuse { .. }), "{d:?}");
}

#[test]
fn an_accepted_fingerprint_rotates() {
    let fp = fingerprint(B).unwrap();
    assert_eq!(decide(Some(&pin(Some(A), Some(&fp))), B), Decision::Rotate);
    // Without the prefix, with blanks: as an operator may paste it.
    let bare = format!(" {} ", fp.trim_start_matches("SHA256:"));
    assert_eq!(
        decide(Some(&pin(Some(A), Some(&bare))), B),
        Decision::Rotate
    );
    // base64 is case-sensitive: a different case is another fingerprint.
    let upper = fp.to_uppercase();
    assert_ne!(upper, fp);
    assert!(matches!(
        decide(Some(&pin(Some(A), Some(&upper))), B),
        Decision::Refuse { .. }
    ));
}
