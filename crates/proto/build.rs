fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so building needs no system package.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = ["../../proto/content.proto", "../../proto/build.proto", "../../proto/worker.proto", "../../proto/raft.proto", "../../proto/ssh.proto", "../../proto/admin.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
