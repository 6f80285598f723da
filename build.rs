//! Compiles `proto/` into Rust types (prost) plus their canonical proto3 JSON mapping (pbjson).
//! `protox` is a pure-Rust protobuf compiler, so a fresh machine needs no system `protoc`.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let proto = "proto/workflow/dlq/v1/dlq.proto";
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptors.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        // Maps keep a stable (sorted) order so encodings are deterministic.
        .btree_map(["."])
        .compile_protos(&[proto], &["proto"])?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .btree_map(["."])
        // Producers may be newer than us: a field we don't know yet is not an error.
        .ignore_unknown_fields()
        .build(&[".workflow.dlq.v1"])?;
    Ok(())
}
