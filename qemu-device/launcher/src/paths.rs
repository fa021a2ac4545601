//! Where the project's sources and the build cache live.

use std::path::PathBuf;

/// The source checkout (scripts, guest driver); `P2PNVME_SRC` overrides.
pub fn source_root() -> PathBuf {
    if let Some(p) = std::env::var_os("P2PNVME_SRC") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

/// Cache of root filesystems and images, outside the checkout; `P2PNVME_CACHE` overrides.
pub fn cache_root() -> PathBuf {
    std::env::var_os("P2PNVME_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/p2pnvme"))
}
