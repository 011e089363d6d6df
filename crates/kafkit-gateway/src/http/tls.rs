//! TLS for the HTTP listener (rustls, with the ring provider): certificate chain and private
//! key from PEM files given by `--tls-cert` / `--tls-key`.

use std::path::Path;

use axum_server::tls_rustls::RustlsConfig;

/// Loads the server certificate chain and key from PEM files; the error names both files.
pub async fn load(cert: &Path, key: &Path) -> std::io::Result<RustlsConfig> {
    // One process-wide provider; an earlier install (by a test, say) is as good as ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!(
                    "loading the TLS certificate {} and key {}: {error}",
                    cert.display(),
                    key.display()
                ),
            )
        })
}
