fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: building sublet needs no system protobuf install.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/provider.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/provider.proto");
    Ok(())
}
