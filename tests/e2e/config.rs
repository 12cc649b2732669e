//! An invalid configuration exits 64, names the field, and binds nothing.

use std::process::Command;

use crate::util::{free_addr, BIN};

fn run_with(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&path).envs(env.iter().copied()).output().expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn invalid_config_exits_64_naming_the_field_before_binding() {
    let admin = free_addr();
    let (code, err) =
        run_with(&format!("admin: {{listen: '{admin}'}}\nlimits: {{header_read_timeout: forever}}\n"), &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("limits.header_read_timeout") && err.contains("\"forever\""), "{err}");
    // Nothing was bound: the admin port is still free.
    std::net::TcpListener::bind(admin).expect("admin port must still be free");

    let (code, err) = run_with("inbound: {app: '127.0.0.1:1'}\nlimitz: {}\n", &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("limitz"), "{err}");

    let (code, err) = run_with("", &[("MESHWARD_LIMITS__MAX_CONNECTIONS", "-3")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("max_connections"), "{err}");
}
