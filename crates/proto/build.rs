fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so building needs no system package.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let protos = ["../../proto/content.proto", "../../proto/build.proto", "../../proto/worker.proto", "../../proto/raft.proto", "../../proto/ssh.proto", "../../proto/admin.proto", "../../proto/history.proto", "../../proto/images.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // Registry credentials: the Debug impl in lib.rs redacts them.
    tonic_prost_build::configure().skip_debug(["rbk.images.v1.RegistryAuth"]).compile_protos(&protos, &["../../proto"])?;
    Ok(())
}
