//! TLS for outbound HTTPS: rustls with the `ring` provider (no C toolchain beyond `cc`).

use std::sync::Once;

/// Makes `ring` the process-wide rustls provider; harmless to call more than once.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
