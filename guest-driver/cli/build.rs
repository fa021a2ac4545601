//! Generates the ioctl ABI bindings from the module's UAPI header, the
//! single definition of that ABI.

fn main() {
    let header = "../module/uapi/p2pcopy.h";
    println!("cargo:rerun-if-changed={header}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    bindgen::Builder::default()
        .header(header)
        .allowlist_type("p2pcopy_.*")
        .allowlist_var("P2PCOPY_.*")
        .derive_default(true)
        .generate()
        .expect("bindgen could not read the UAPI header (is libclang-dev installed?)")
        .write_to_file(out.join("uapi.rs"))
        .unwrap();
}
