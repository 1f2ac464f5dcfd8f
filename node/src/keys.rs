//! The node key: an ed25519 keypair in libp2p's protobuf encoding. The
//! peer id derived from it is the replica's identity on the wire.

use std::path::Path;

use anyhow::{bail, Context};
use libp2p::identity::Keypair;

/// Reads the key at `path`.
pub fn load(path: &Path) -> anyhow::Result<Keypair> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read key {}", path.display()))?;
    Keypair::from_protobuf_encoding(&bytes).with_context(|| {
        format!(
            "{} is not a node key (chorus keygen writes one)",
            path.display()
        )
    })
}

/// Writes a new key to `path` (never overwriting one) and returns it.
pub fn generate(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        bail!(
            "{} exists; refusing to overwrite a node key",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = Keypair::generate_ed25519();
    let bytes = key.to_protobuf_encoding().context("encode the key")?;
    write_private(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// Loads the key, creating it on first start.
pub fn load_or_generate(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        load(path)
    } else {
        generate(path)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
