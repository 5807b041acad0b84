//! Compiles Concord's etcd-compatible `.proto` files without a system
//! `protoc`: `protox` parses them into a `FileDescriptorSet`, which is written
//! to `OUT_DIR` (exported as `FILE_DESCRIPTOR_SET`) and handed to
//! `tonic-prost-build` for message, client and server code generation.

use std::{env, path::PathBuf};

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{p}");
    }

    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true);
    compiler.include_source_info(true);
    for p in PROTOS {
        compiler.open_file(p)?;
    }
    let fds = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // The exported descriptor set carries no source info: it is for
    // reflection and the JSON gateway, not for docs.
    let mut lean = fds.clone();
    for file in &mut lean.file {
        file.source_code_info = None;
    }
    std::fs::write(
        out_dir.join("concord_etcd_descriptor.bin"),
        prost::Message::encode_to_vec(&lean),
    )?;

    // `prost::Name` impls give every message its fully qualified protobuf
    // name (type URLs for reflection and the JSON gateway).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
