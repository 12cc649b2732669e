//! Replays files through a fuzz target's check on stable Rust, e.g. a crash
//! that `cargo fuzz run` saved:
//! `cargo run --example replay -- http1_request_head artifacts/http1_request_head/crash-...`

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), files) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: replay TARGET FILE...");
        std::process::exit(2);
    };
    let Some((_, check)) = meshward_fuzz::TARGETS.iter().find(|(name, _)| *name == target) else {
        let names: Vec<_> = meshward_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("unknown target {target:?}; targets: {names:?}");
        std::process::exit(2);
    };
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        println!("{target}: {f} ({} bytes)", bytes.len());
        check(&bytes);
    }
    println!("{} file(s) passed", files.len());
}
