//! Replays `seeds/<target>/` (committed) and `corpus/<target>/` (local,
//! grown by `cargo fuzz run`) through each target's check, on stable Rust.
//! The HTTP/1 inputs are also replayed with other read splits and limits.

use std::path::{Path, PathBuf};

use meshward_fuzz::{
    check_admission_review, check_config, check_http1_request_head, check_oip_v2, check_policy_file, check_spiffe_id,
    HTTP1_HEADER,
};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["seeds", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries {
            let path = e.expect("dir entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read input");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for (path, bytes) in &files {
        // Printed (and shown by the test harness) if the check panics.
        println!("{target}: {}", path.display());
        check(bytes);
    }
    files.len()
}

#[test]
fn config_file_seeds() {
    assert!(replay("config_file", check_config) >= 5, "seeds/config_file is missing");
}

#[test]
fn spiffe_id_seeds() {
    assert!(replay("spiffe_id", check_spiffe_id) >= 5, "seeds/spiffe_id is missing");
}

#[test]
fn policy_file_seeds() {
    assert!(replay("policy_file", check_policy_file) >= 5, "seeds/policy_file is missing");
}

#[test]
fn admission_review_seeds() {
    assert!(replay("admission_review", check_admission_review) >= 5, "seeds/admission_review is missing");
}

#[test]
fn oip_v2_seeds() {
    assert!(replay("oip_v2", check_oip_v2) >= 5, "seeds/oip_v2 is missing");
}

#[test]
fn http1_request_head_seeds() {
    assert!(replay("http1_request_head", check_http1_request_head) >= 5, "seeds/http1_request_head is missing");
}

#[test]
fn http1_request_head_seeds_with_other_splits() {
    // head limit, read buffer, two read sizes (0x80: Pending first).
    let variants: [[u8; HTTP1_HEADER]; 7] =
        [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 3, 7], [0, 5, 0x82, 0x80], [1, 0, 2, 0], [2, 16, 13, 64]];
    for (path, bytes) in inputs("http1_request_head") {
        let Some(payload) = bytes.get(HTTP1_HEADER..) else { continue };
        for v in variants {
            println!("{} with {v:?}", path.display());
            check_http1_request_head(&[&v[..], payload].concat());
        }
    }
}

#[test]
fn config_seeds_cover_accepted_and_refused_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/config_file");
    let parse = |name: &str| {
        let text = std::fs::read_to_string(root.join(name)).expect("seed");
        meshward::config::Config::from_yaml(&text).map_err(|e| e.to_string())
    };
    for ok in ["full.yaml", "inbound_app.yaml", "empty.yaml", "anchors.yaml"] {
        assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
    }
    for bad in ["small_header_limit.yaml", "duplicate_names.yaml", "types.yaml"] {
        assert!(parse(bad).is_err(), "{bad} was accepted");
    }
}
